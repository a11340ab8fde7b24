output "alb_dns_name" {
  description = "Point the domain here (CNAME or Route 53 alias)"
  value       = aws_lb.main.dns_name
}

output "alb_zone_id" {
  description = "The ALB's hosted zone, for a Route 53 alias"
  value       = aws_lb.main.zone_id
}

output "ecr_repository_url" {
  description = "Where CI pushes images"
  value       = aws_ecr_repository.app.repository_url
}

output "ecs_cluster_name" {
  value = aws_ecs_cluster.main.name
}

output "ecs_service_name" {
  value = aws_ecs_service.app.name
}

output "rds_address" {
  description = "The RDS host name (the runbook's tunnel forwards to it; TLS is verified for it)"
  value       = aws_db_instance.main.address
}

output "rds_endpoint" {
  description = "host:port of the RDS instance"
  value       = aws_db_instance.main.endpoint
}

output "deploy_role_arn" {
  description = "AWS_ROLE_ARN for the GitHub workflow"
  value       = aws_iam_role.deploy.arn
}
