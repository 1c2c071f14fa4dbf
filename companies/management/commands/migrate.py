"""`migrate` = django-tenants' migrate_schemas, plus the template schema and the platform.

Order: public schema, every company schema, then the template schema new companies are cloned
from (TENANT_BASE_SCHEMA), then the platform company if it does not exist yet.
"""

from django.conf import settings
from django.db import connection
from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand
from django_tenants.migration_executors import get_executor
from django_tenants.utils import schema_exists


class Command(MigrateSchemasCommand):
    def handle(self, *args, **options):
        whole_database = not options.get("schema_name") and not options.get("app_label")
        super().handle(*args, **options)
        if not (whole_database and self.sync_tenant):
            return
        template = settings.TENANT_BASE_SCHEMA
        if not schema_exists(template):
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE SCHEMA "{template}"')
        get_executor(codename=self.executor)(self.args, self.options).run_migrations(tenants=[template])
        connection.set_schema_to_public()

        from companies.services import platform_ensure

        platform_ensure()
