# The app's other long-running processes (Heroku's worker, clock, …): one ECS service each, with
# no load balancer, the web service's image, and its own command and size. Written by
# `cutover init` from Heroku's formation; the values are in shape.auto.tfvars.json.

variable "processes" {
  description = "Process type → its command, task count and Fargate size (from Heroku's formation)"
  type = map(object({
    command = string
    count   = number
    cpu     = number
    memory  = number
  }))
  default = {}
}

resource "aws_ecs_task_definition" "process" {
  for_each                 = var.processes
  family                   = "${var.app}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
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
    # A Procfile command is shell (it may use $PORT or a variable): run as Heroku runs it.
    command = ["/bin/sh", "-c", "exec ${each.value.command}"]
    secrets = [for key in sort(tolist(local.env_keys)) : {
      name      = key
      valueFrom = aws_ssm_parameter.env[key].arn
    }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.app.name
        awslogs-region        = var.region
        awslogs-stream-prefix = each.key
      }
    }
  }])
}

resource "aws_ecs_service" "process" {
  for_each        = var.processes
  name            = "${var.app}-${each.key}"
  cluster         = aws_ecs_cluster.main.id
  task_definition = aws_ecs_task_definition.process[each.key].arn
  # Made with no task: until the domain points at AWS a worker would write to RDS beside the
  # database move's catch-ups, and a clock would run Heroku's jobs a second time. The runbook's
  # processes-on step starts each at its count (a clock at most 1) after the cutover.
  desired_count = 0
  # A clock never runs twice, not even for a moment during a deployment (each job would fire
  # twice): the old task stops before the new one starts.
  deployment_minimum_healthy_percent = each.key == "clock" ? 0 : 100
  deployment_maximum_percent         = each.key == "clock" ? 100 : 200
  launch_type                        = "FARGATE"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.public[*].id
    security_groups  = [aws_security_group.fargate.id]
    assign_public_ip = true
  }

  # CI deploys new task definitions and the runbook sets the task count: Terraform keeps both.
  lifecycle {
    ignore_changes = [task_definition, desired_count]
  }
}

# The deploy workflow updates these services too, and registers their task definitions.
data "aws_iam_policy_document" "deploy_processes" {
  count = length(var.processes) > 0 ? 1 : 0
  statement {
    sid       = "DeployProcesses"
    actions   = ["ecs:UpdateService", "ecs:DescribeServices"]
    resources = [for s in aws_ecs_service.process : s.id]
  }
}

resource "aws_iam_role_policy" "deploy_processes" {
  count  = length(var.processes) > 0 ? 1 : 0
  name   = "deploy-processes"
  role   = aws_iam_role.deploy.id
  policy = data.aws_iam_policy_document.deploy_processes[0].json
}

output "process_services" {
  description = "The ECS service of each process type other than web"
  value       = { for k, s in aws_ecs_service.process : k => s.name }
}
