import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    """Pending months for mailbox-only changes; the month whose report carries a late adjustment
    (until now always the month after the adjustment's own, which is what existing rows get)."""

    dependencies = [("usage", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="pendingrollup", name="months",
            field=django.contrib.postgres.fields.ArrayField(base_field=models.DateField(), blank=True, default=list,
                                                            size=None)),
        migrations.AddField(model_name="lateadjustment", name="reported_in", field=models.DateField(null=True)),
        migrations.RunSQL("UPDATE usage_lateadjustment SET reported_in = (month + interval '1 month')::date",
                          migrations.RunSQL.noop),
        migrations.AlterField(model_name="lateadjustment", name="reported_in", field=models.DateField()),
        migrations.AddIndex(model_name="lateadjustment",
                            index=models.Index(fields=["reported_in"], name="late_adjustment_reported")),
    ]
