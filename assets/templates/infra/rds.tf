resource "aws_db_subnet_group" "main" {
  name       = var.app
  subnet_ids = aws_subnet.private[*].id
}

# pgvector on RDS is `CREATE EXTENSION vector` (cutover's db.extensions step), not a preloaded
# library; the parameter group only pins the family.
resource "aws_db_parameter_group" "main" {
  name   = "${var.app}-pg16"
  family = "postgres16"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
}

# Storage grows on its own up to var.db_max_storage_gb (0: it does not).
resource "aws_db_instance" "main" {
  identifier                          = var.db_instance
  engine                              = "postgres"
  engine_version                      = "16"
  instance_class                      = var.db_instance_class
  allocated_storage                   = 20
  max_allocated_storage               = var.db_max_storage_gb
  storage_type                        = "gp3"
  storage_encrypted                   = true
  multi_az                            = var.db_multi_az
  publicly_accessible                 = false
  db_name                             = var.db_name
  username                            = var.db_username
  manage_master_user_password         = true
  db_subnet_group_name                = aws_db_subnet_group.main.name
  parameter_group_name                = aws_db_parameter_group.main.name
  vpc_security_group_ids              = [aws_security_group.rds.id]
  backup_retention_period             = 7
  copy_tags_to_snapshot               = true
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.db_instance}-final"
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = ["postgresql"]
  performance_insights_enabled        = true
}
