"""Endpoint-day, endpoint-month and the rollup watermark become company-scoped rows in the public
schema (docs/decisions.md, "Lasting rows out of the company schemas"). The rows each company schema
holds are copied here first; telemetry 0004, which depends on this migration and runs in the company
schemas after the public schema is migrated, then drops the old tables."""

import django.db.models.deletion
from django.db import migrations, models

COLUMNS = ("endpoint_id, modules, xdr_sensors, used_central_scan, uptime_seconds, os_family, os_type, machine_type, "
           "container_host, heartbeats, first_seen_at, last_seen_at")


def copy_from_company_schemas(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT id, schema_name FROM companies_company ORDER BY id")
        for company_id, schema in cursor.fetchall():
            quoted = '"' + schema.replace('"', '""') + '"'
            for table, when in (("endpointday", "day"), ("endpointmonth", "month")):
                cursor.execute("SELECT to_regclass(%s)", [f"{quoted}.telemetry_{table}"])
                if cursor.fetchone()[0] is not None:
                    cursor.execute(f"INSERT INTO usage_{table} (company_id, {when}, {COLUMNS}) "  # noqa: S608 - quoted
                                   f"SELECT %s, {when}, {COLUMNS} FROM {quoted}.telemetry_{table}", [company_id])
            cursor.execute("SELECT to_regclass(%s)", [f"{quoted}.telemetry_rollupwatermark"])
            if cursor.fetchone()[0] is not None:
                cursor.execute("INSERT INTO usage_rollupwatermark (company_id, seq) "  # noqa: S608 - quoted
                               f"SELECT %s, seq FROM {quoted}.telemetry_rollupwatermark", [company_id])


class Migration(migrations.Migration):

    dependencies = [
        ('companies', '0004_auditevent_lineage'),
        ('usage', '0005_heartbeat_purge'),
    ]

    operations = [
        migrations.CreateModel(
            name='RollupWatermark',
            fields=[
                ('company', models.OneToOneField(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='companies.company')),
                ('seq', models.BigIntegerField()),
            ],
        ),
        migrations.CreateModel(
            name='EndpointDay',
            fields=[
                ('endpoint_id', models.UUIDField()),
                ('modules', models.IntegerField()),
                ('xdr_sensors', models.SmallIntegerField()),
                ('used_central_scan', models.BooleanField()),
                ('uptime_seconds', models.BigIntegerField()),
                ('os_family', models.CharField(max_length=16)),
                ('os_type', models.CharField(max_length=16)),
                ('machine_type', models.CharField(max_length=16)),
                ('container_host', models.BooleanField()),
                ('heartbeats', models.IntegerField()),
                ('first_seen_at', models.DateTimeField()),
                ('last_seen_at', models.DateTimeField()),
                ('pk', models.CompositePrimaryKey('company_id', 'day', 'endpoint_id', blank=True, editable=False, primary_key=True, serialize=False)),
                ('day', models.DateField()),
                ('company', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='companies.company')),
            ],
            options={
                'indexes': [models.Index(fields=['company', 'endpoint_id', 'day'], name='endpoint_day_endpoint')],
            },
        ),
        migrations.CreateModel(
            name='EndpointMonth',
            fields=[
                ('endpoint_id', models.UUIDField()),
                ('modules', models.IntegerField()),
                ('xdr_sensors', models.SmallIntegerField()),
                ('used_central_scan', models.BooleanField()),
                ('uptime_seconds', models.BigIntegerField()),
                ('os_family', models.CharField(max_length=16)),
                ('os_type', models.CharField(max_length=16)),
                ('machine_type', models.CharField(max_length=16)),
                ('container_host', models.BooleanField()),
                ('heartbeats', models.IntegerField()),
                ('first_seen_at', models.DateTimeField()),
                ('last_seen_at', models.DateTimeField()),
                ('pk', models.CompositePrimaryKey('company_id', 'month', 'endpoint_id', blank=True, editable=False, primary_key=True, serialize=False)),
                ('month', models.DateField()),
                ('company', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='companies.company')),
            ],
            options={
                'abstract': False,
            },
        ),
        migrations.RunPython(copy_from_company_schemas, migrations.RunPython.noop),
    ]
