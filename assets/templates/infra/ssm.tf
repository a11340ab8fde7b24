# One SecureString per key of .env.example. Terraform creates them with a placeholder; the real
# values are written by cutover's ssm.sync step (from Heroku's config), which Terraform then
# leaves alone.
resource "aws_ssm_parameter" "env" {
  for_each = local.env_keys
  name     = "${var.ssm_prefix}${each.value}"
  type     = "SecureString"
  value    = "set-by-cutover-ssm-sync"

  lifecycle {
    ignore_changes = [value]
  }
}
