from django.db import migrations

import usage.models


class Migration(migrations.Migration):
    """H5: rows below a company in a month, found by an index on the stored lineage's ids."""

    dependencies = [("usage", "0003_usage_lineage")]

    operations = [
        migrations.AlterField(model_name="companymonthusage", name="lineage",
                              field=usage.models.LineageField(default="", max_length=2000)),
        migrations.AlterField(model_name="lateadjustment", name="lineage",
                              field=usage.models.LineageField(default="", max_length=2000)),
        migrations.RunSQL(
            "CREATE INDEX company_month_ancestors ON usage_companymonthusage "
            "USING gin ((string_to_array(btrim(lineage, '/'), '/')::bigint[]))",
            "DROP INDEX company_month_ancestors"),
    ]
