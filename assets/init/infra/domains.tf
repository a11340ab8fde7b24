# The app's other custom domains on Heroku: each gets its ACM certificate (validated in its own
# Route 53 zone) on the ALB's HTTPS listener, and is cut over by the runbook like the first.
# Written by `cutover init` from Heroku's domains; the values are in shape.auto.tfvars.json.

variable "extra_domains" {
  description = "Host name → the Route 53 zone holding it (the first domain is var.domain)"
  type        = map(string)
  default     = {}
}

data "aws_route53_zone" "extra" {
  for_each = toset(values(var.extra_domains))
  name     = each.value
}

resource "aws_acm_certificate" "extra" {
  for_each          = var.extra_domains
  domain_name       = each.key
  validation_method = "DNS"

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "extra_validation" {
  for_each = {
    for d in flatten([
      for host, cert in aws_acm_certificate.extra : [
        for o in cert.domain_validation_options : { host = host, option = o }
      ]
    ]) : d.host => d.option
  }
  zone_id         = data.aws_route53_zone.extra[var.extra_domains[each.key]].zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "extra" {
  for_each                = var.extra_domains
  certificate_arn         = aws_acm_certificate.extra[each.key].arn
  validation_record_fqdns = [aws_route53_record.extra_validation[each.key].fqdn]
}

resource "aws_lb_listener_certificate" "extra" {
  for_each        = var.extra_domains
  listener_arn    = aws_lb_listener.https.arn
  certificate_arn = aws_acm_certificate_validation.extra[each.key].certificate_arn
}
