import { Controller, Get, ServiceUnavailableException } from '@nestjs/common';
import { DataSource } from 'typeorm';

/**
 * The ALB target group's health check: 200 while the process serves requests and reaches its
 * database, 503 when it cannot. It says which database it reached (the server's system
 * identifier and the database's name), so the migration can prove the app moved to RDS:
 * cutover's smoke test compares them with what the copy wrote into.
 */
@Controller('health')
export class HealthController {
  constructor(private readonly dataSource: DataSource) {}

  @Get()
  async check(): Promise<{ status: string; database: { system_identifier: string; name: string } }> {
    try {
      const [row] = await this.dataSource.query(
        'SELECT s.system_identifier::text AS system_identifier, current_database() AS name FROM pg_control_system() s',
      );
      return { status: 'ok', database: { system_identifier: row.system_identifier, name: row.name } };
    } catch {
      throw new ServiceUnavailableException({ status: 'error', database: 'unreachable' });
    }
  }
}
