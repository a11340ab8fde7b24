# Heroku Redis (or Key-Value Store) as ElastiCache for Redis: private subnets, reached from the
# tasks only, TLS and an AUTH token (kept in Secrets Manager, never in a file). Its data is not
# moved: the runbook drains the queues before the freeze. Written by `cutover init`; the node
# type (by memory, never less than the Heroku plan's) is in shape.auto.tfvars.json.

variable "redis" {
  description = "The ElastiCache node for Heroku Redis (null: the app has none)"
  type = object({
    node_type      = string
    engine_version = string
  })
  default = null
}

locals {
  redis = var.redis == null ? 0 : 1
}

resource "aws_elasticache_subnet_group" "redis" {
  count      = local.redis
  name       = "${var.app}-redis"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_security_group" "redis" {
  count       = local.redis
  name        = "${var.app}-redis"
  description = "ElastiCache: Redis from the Fargate tasks only"
  vpc_id      = aws_vpc.main.id
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_fargate" {
  count                        = local.redis
  security_group_id            = aws_security_group.redis[0].id
  description                  = "From the Fargate tasks only"
  referenced_security_group_id = aws_security_group.fargate.id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

# The AUTH token: generated once by AWS, kept in Secrets Manager; later plans keep it.
data "aws_secretsmanager_random_password" "redis" {
  count               = local.redis
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "redis" {
  count                   = local.redis
  name                    = "${var.app}/redis-auth-token"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "redis" {
  count         = local.redis
  secret_id     = aws_secretsmanager_secret.redis[0].id
  secret_string = data.aws_secretsmanager_random_password.redis[0].random_password

  lifecycle {
    ignore_changes = [secret_string]
  }
}

resource "aws_elasticache_replication_group" "redis" {
  count                      = local.redis
  replication_group_id       = "${var.app}-redis"
  description                = "${var.app}: Heroku Redis's replacement"
  engine                     = "redis"
  engine_version             = var.redis.engine_version
  node_type                  = var.redis.node_type
  num_cache_clusters         = 1
  port                       = 6379
  subnet_group_name          = aws_elasticache_subnet_group.redis[0].name
  security_group_ids         = [aws_security_group.redis[0].id]
  at_rest_encryption_enabled = true
  transit_encryption_enabled = true
  auth_token                 = aws_secretsmanager_secret_version.redis[0].secret_string
  auto_minor_version_upgrade = true
  snapshot_retention_limit   = 1
  apply_immediately          = false
}

output "redis_url" {
  description = "REDIS_URL for the app (rediss://, with the AUTH token): the runbook writes it to SSM"
  sensitive   = true
  value = local.redis == 0 ? "" : format(
    "rediss://:%s@%s:6379",
    aws_secretsmanager_secret_version.redis[0].secret_string,
    aws_elasticache_replication_group.redis[0].primary_endpoint_address
  )
}
