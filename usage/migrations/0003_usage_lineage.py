from django.db import migrations, models


class Migration(migrations.Migration):
    """H5: each company-month row (and late adjustment) keeps the company's place in the tree for its
    month; existing rows take today's place, the best known."""

    dependencies = [("usage", "0002_pending_months_late_reported_in"), ("companies", "0003_company_plan")]

    operations = [
        migrations.AddField(model_name="companymonthusage", name="lineage",
                            field=models.CharField(default="", max_length=2000)),
        migrations.AddField(model_name="lateadjustment", name="lineage",
                            field=models.CharField(default="", max_length=2000)),
        migrations.RunSQL(
            "UPDATE usage_companymonthusage u SET lineage = c.lineage FROM companies_company c "
            "WHERE c.id = u.company_id; "
            "UPDATE usage_lateadjustment a SET lineage = u.lineage FROM usage_companymonthusage u "
            "WHERE u.company_id = a.company_id AND u.month = a.month",
            migrations.RunSQL.noop),
    ]
