import { Controller, Get, HttpCode } from '@nestjs/common';

/** The ALB target group's health check: 200 while the process serves requests. */
@Controller('health')
export class HealthController {
  @Get()
  @HttpCode(200)
  check(): { status: string } {
    return { status: 'ok' };
  }
}
