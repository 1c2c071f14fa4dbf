"""Files with endpoint rows made before 0004 get the companies they may list: every company now in
their target's subtree with a usage row for their month (a superset of what they list, so a file
closes whenever any of those is hidden from its owner or moves away: C3, C6)."""

from django.db import migrations

FILL = """
UPDATE reports_reportfile f SET endpoint_company_ids = COALESCE((
    SELECT array_agg(d.id ORDER BY d.id)
    FROM companies_company t
    JOIN companies_company d ON d.lineage LIKE t.lineage || '%'
    JOIN usage_companymonthusage u ON u.company_id = d.id AND u.month = f.month
    WHERE t.id = f.company_id), '{}')
WHERE f.network_detail AND f.endpoint_company_ids IS NULL
"""


class Migration(migrations.Migration):

    dependencies = [
        ("reports", "0004_report_file_endpoint_companies"),
        ("usage", "0001_initial"),
    ]

    operations = [migrations.RunSQL(FILL, reverse_sql=migrations.RunSQL.noop)]
