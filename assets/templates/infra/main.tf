# @@app@@ on AWS ECS Fargate — written by cutover's scaffold from the migration plan.
terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region              = var.region
  allowed_account_ids = [var.account_id]

  default_tags {
    tags = {
      app        = var.app
      managed_by = "terraform"
    }
  }
}

data "aws_availability_zones" "available" {
  state = "available"

  # The two zones the network spans, by name: a zone AWS adds later changes nothing.
  filter {
    name   = "zone-name"
    values = ["${var.region}a", "${var.region}b"]
  }
}

data "aws_caller_identity" "current" {}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, 2)
  # Every key of the app's .env.example becomes an SSM parameter.
  env_keys = toset([
    for line in split("\n", file(var.env_example_path)) :
    trimspace(split("=", line)[0])
    if length(regexall("^[A-Za-z_][A-Za-z0-9_]*=", trimspace(line))) > 0
  ])
}

# An email when the month's spend is forecast past the limit (the plan expects ~$45-62).
resource "aws_budgets_budget" "monthly" {
  name         = "${var.app}-monthly"
  budget_type  = "COST"
  limit_amount = tostring(var.budget_limit_usd)
  limit_unit   = "USD"
  time_unit    = "MONTHLY"

  notification {
    comparison_operator        = "GREATER_THAN"
    threshold                  = 100
    threshold_type             = "PERCENTAGE"
    notification_type          = "FORECASTED"
    subscriber_email_addresses = [var.budget_email]
  }
}
