"""The lasting rows leave the company schema: usage 0006 (run in the public schema first) has copied
them into company-scoped rows there."""

from django.db import migrations


def public_schema_migrated_first(apps, schema_editor):
    """The copy runs with the public schema's migrations: migrating company schemas alone (migrate_schemas
    --tenant) must not drop tables whose rows were never copied."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('public.usage_rollupwatermark')")
        if cursor.fetchone()[0] is None:
            raise RuntimeError("Migrate the public schema first (usage 0006 copies the rows this migration drops).")


class Migration(migrations.Migration):

    dependencies = [
        ('telemetry', '0003_heartbeat_seq_watermark'),
        ('usage', '0006_lasting_rows_public'),
    ]

    operations = [
        migrations.RunPython(public_schema_migrated_first),  # and irreversible: the copies would be lost
        migrations.DeleteModel(
            name='EndpointDay',
        ),
        migrations.DeleteModel(
            name='EndpointMonth',
        ),
        migrations.RunSQL("DROP TABLE telemetry_rollupwatermark", reverse_sql=migrations.RunSQL.noop),
    ]
