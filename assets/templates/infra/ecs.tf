resource "aws_cloudwatch_log_group" "app" {
  name              = var.log_group
  retention_in_days = 30
}

resource "aws_ecs_cluster" "main" {
  name = var.app
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  # ECS Exec sessions (the runbook's Session Manager tunnel to RDS) are logged with the app's.
  configuration {
    execute_command_configuration {
      logging = "OVERRIDE"
      log_configuration {
        cloud_watch_log_group_name = aws_cloudwatch_log_group.app.name
      }
    }
  }
}

resource "aws_ecs_cluster_capacity_providers" "main" {
  cluster_name       = aws_ecs_cluster.main.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]
  # Production runs on demand; FARGATE_SPOT is there for staging and one-off work.
  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_ecs_task_definition" "app" {
  family                   = var.app
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    cpu_architecture        = var.cpu_architecture
    operating_system_family = "LINUX"
  }

  container_definitions = jsonencode([{
    name                   = var.app
    image                  = "${aws_ecr_repository.app.repository_url}:${var.image_tag}"
    essential              = true
    readonlyRootFilesystem = false
    portMappings           = [{ containerPort = var.container_port, protocol = "tcp" }]
    environment            = [{ name = "PORT", value = tostring(var.container_port) }]
    # Every key of .env.example, read from SSM when the task starts.
    secrets = [for key in sort(tolist(local.env_keys)) : {
      name      = key
      valueFrom = aws_ssm_parameter.env[key].arn
    }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.app.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "ecs"
      }
    }
  }])
}

resource "aws_ecs_service" "app" {
  name                              = var.app
  cluster                           = aws_ecs_cluster.main.id
  task_definition                   = aws_ecs_task_definition.app.arn
  desired_count                     = var.desired_count
  launch_type                       = "FARGATE"
  health_check_grace_period_seconds = var.health_check_grace_seconds
  # ECS Exec: the database phase reaches the private RDS through a Session Manager port forward
  # from a running task (no public port, no extra security-group rule). The task role holds
  # only the ssmmessages channel permissions it needs (iam.tf).
  enable_execute_command = true

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.public[*].id
    security_groups  = [aws_security_group.fargate.id]
    assign_public_ip = true # public subnets instead of a NAT gateway (~$32/month saved)
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.app.arn
    container_name   = var.app
    container_port   = var.container_port
  }

  # CI deploys new task definitions; Terraform does not roll them back.
  lifecycle {
    ignore_changes = [task_definition]
  }

  depends_on = [aws_lb_listener.http]
}
