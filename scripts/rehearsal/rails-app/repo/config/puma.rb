port ENV.fetch("PORT", 3000)
workers 2
