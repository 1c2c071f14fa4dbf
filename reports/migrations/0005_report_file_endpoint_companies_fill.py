"""Files with endpoint rows made before 0004 get the companies they may list: every company now in
their target's subtree with a usage row for their month, and every company moved since the file was
made from a parent now in that subtree, with what moved along with it (the file may list it; C6). A
file then closes whenever any of those is hidden from its owner or outside its subtree (C3, C6)."""

from django.db import migrations

FILL = """
UPDATE reports_reportfile f SET endpoint_company_ids = COALESCE((
    SELECT array_agg(DISTINCT listed.id ORDER BY listed.id) FROM (
        SELECT d.id
        FROM companies_company t
        JOIN companies_company d ON d.lineage LIKE t.lineage || '%'
        JOIN usage_companymonthusage u ON u.company_id = d.id AND u.month = f.month
        WHERE t.id = f.company_id
        UNION
        SELECT d.id
        FROM companies_auditevent e
        JOIN companies_company t ON t.id = f.company_id
        JOIN companies_company old_parent ON old_parent.id = (e.before ->> 'parent')::bigint
                                         AND old_parent.lineage LIKE t.lineage || '%'
        JOIN companies_company moved ON moved.id = e.company_id
        JOIN companies_company d ON d.lineage LIKE moved.lineage || '%'
        WHERE e.action = 'company.move' AND e.at > f.created_at
    ) AS listed), '{}')
WHERE f.network_detail AND f.endpoint_company_ids IS NULL
"""


class Migration(migrations.Migration):

    dependencies = [
        ("reports", "0004_report_file_endpoint_companies"),
        ("usage", "0001_initial"),
        ("companies", "0001_initial"),
    ]

    operations = [migrations.RunSQL(FILL, reverse_sql=migrations.RunSQL.noop)]
