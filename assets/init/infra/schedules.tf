# Heroku Scheduler's jobs as EventBridge Scheduler schedules: each runs the web service's task
# definition (its latest revision) with the job's command, once, as Heroku Scheduler does (no
# retry). Written by `cutover init` from scheduler.toml; the values are in
# shape.auto.tfvars.json.

variable "schedules" {
  description = "Job name → its schedule expression (UTC) and command (from scheduler.toml)"
  type = map(object({
    expression = string
    command    = string
  }))
  default = {}
}

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [var.account_id]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  count              = length(var.schedules) > 0 ? 1 : 0
  name               = "${var.app}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid     = "RunJobs"
    actions = ["ecs:RunTask"]
    # A target without a revision is authorized against the family's ARN itself.
    resources = [
      aws_ecs_task_definition.app.arn_without_revision,
      "${aws_ecs_task_definition.app.arn_without_revision}:*",
    ]
  }
  statement {
    sid       = "PassTaskRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.task.arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  count  = length(var.schedules) > 0 ? 1 : 0
  name   = "run-jobs"
  role   = aws_iam_role.scheduler[0].id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_scheduler_schedule" "job" {
  for_each                     = var.schedules
  name                         = "${var.app}-${each.key}"
  schedule_expression          = each.value.expression
  schedule_expression_timezone = "UTC"
  # Made disabled: Heroku Scheduler runs the jobs until the cutover; the runbook's processes-on
  # step enables each after it (and its rollback disables them).
  state = "DISABLED"

  lifecycle {
    ignore_changes = [state]
  }

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_ecs_cluster.main.arn
    role_arn = aws_iam_role.scheduler[0].arn

    ecs_parameters {
      # The family without a revision: the revision CI deployed last.
      task_definition_arn = aws_ecs_task_definition.app.arn_without_revision
      launch_type         = "FARGATE"
      task_count          = 1
      # The runbook finds the jobs' tasks by it (to stop them on the way back).
      group = "${var.app}-schedule"

      network_configuration {
        subnets          = aws_subnet.public[*].id
        security_groups  = [aws_security_group.fargate.id]
        assign_public_ip = true
      }
    }

    input = jsonencode({
      containerOverrides = [{
        name    = var.app
        command = ["/bin/sh", "-c", "exec ${each.value.command}"]
      }]
    })

    retry_policy {
      maximum_retry_attempts = 0
    }
  }
}

output "schedules" {
  description = "The EventBridge schedule of each Heroku Scheduler job"
  value       = { for k, s in aws_scheduler_schedule.job : k => s.name }
}
