"""The lasting rows leave the company schema: usage 0006 (run in the public schema first) has copied
them into company-scoped rows there."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('telemetry', '0003_heartbeat_seq_watermark'),
        ('usage', '0006_lasting_rows_public'),
    ]

    operations = [
        migrations.DeleteModel(
            name='EndpointDay',
        ),
        migrations.DeleteModel(
            name='EndpointMonth',
        ),
        migrations.RunSQL("DROP TABLE telemetry_rollupwatermark", reverse_sql=migrations.RunSQL.noop),
    ]
