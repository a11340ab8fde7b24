variable "app" {
  description = "Application name, used for every resource"
  type        = string
  default     = "@@app@@"
}

variable "account_id" {
  description = "The only AWS account this configuration may touch"
  type        = string
  default     = "@@aws_account_id@@"
}

variable "region" {
  description = "AWS region"
  type        = string
  default     = "@@aws_region@@"
}

variable "vpc_cidr" {
  description = "VPC address range"
  type        = string
  default     = "10.40.0.0/16"
}

variable "container_port" {
  description = "Port the container listens on"
  type        = number
  default     = @@port@@
}

variable "task_cpu" {
  description = "Fargate task CPU units (512 = 0.5 vCPU)"
  type        = number
  default     = 512
}

variable "task_memory" {
  description = "Fargate task memory (MiB)"
  type        = number
  default     = 1024
}

variable "desired_count" {
  description = "Tasks the web service runs (Heroku's web dynos)"
  type        = number
  default     = 1
}

variable "cpu_architecture" {
  description = "ARM64 (Graviton, cheaper) unless the image says otherwise (X86_64)"
  type        = string
  default     = "ARM64"
}

variable "health_path" {
  description = "The path the ALB's health check requests (200 means healthy)"
  type        = string
  default     = "/health"
}

variable "image_tag" {
  description = "Image tag the service runs"
  type        = string
  default     = "latest"
}

variable "ecr_repository" {
  description = "ECR repository name"
  type        = string
  default     = "@@ecr_repository@@"
}

variable "ssm_prefix" {
  description = "SSM Parameter Store path of the app's environment"
  type        = string
  default     = "@@ssm_prefix@@"
}

variable "env_example_path" {
  description = "The app's .env.example: every key becomes an SSM SecureString"
  type        = string
  default     = "../gengar/.env.example"
}

variable "log_group" {
  description = "CloudWatch log group of the tasks"
  type        = string
  default     = "@@log_group@@"
}

variable "db_instance" {
  description = "RDS instance identifier"
  type        = string
  default     = "@@rds_instance@@"
}

variable "db_name" {
  description = "Database name on RDS"
  type        = string
  default     = "@@app@@"
}

variable "db_instance_class" {
  description = "RDS instance class"
  type        = string
  default     = "db.t4g.micro"
}

variable "db_max_storage_gb" {
  description = "RDS storage autoscaling's ceiling in GB (0: off)"
  type        = number
  default     = 0
}

variable "db_multi_az" {
  description = "A standby in a second AZ (as Heroku Postgres' premium plans keep one)"
  type        = bool
  default     = false
}

variable "db_username" {
  description = "RDS master user"
  type        = string
  default     = "@@app@@_admin"
}

variable "s3_bucket" {
  description = "The S3 bucket the app already uses (the task role may reach it only)"
  type        = string
  default     = "@@s3_bucket@@"
}

variable "github_repository" {
  description = "owner/name of the repository whose workflow deploys (OIDC)"
  type        = string
  default     = "@@github_repository@@"
}

variable "domain" {
  description = "The API's public name (the ALB's certificate is issued for it)"
  type        = string
  default     = "@@domain@@"
}

variable "hosted_zone" {
  description = "The Route 53 zone holding the domain (certificate validation records go there)"
  type        = string
  default     = "@@hosted_zone@@"
}

variable "budget_limit_usd" {
  description = "Monthly budget alert threshold (USD)"
  type        = number
  default     = 60
}

variable "budget_email" {
  description = "Who the budget alert emails"
  type        = string
  default     = "@@budget_email@@"
}

variable "health_check_grace_seconds" {
  description = "Time a new task gets before ALB health checks count"
  type        = number
  default     = 60
}
