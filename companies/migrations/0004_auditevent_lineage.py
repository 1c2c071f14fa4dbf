"""X1/C6: each audit event keeps the lineage its company had when the event was recorded.

Backfill: every event gets its company's lineage today; then, for each recorded change of partner
(newest first), the events of the moved subtree recorded up to that move get the lineage they had
before it (the old parent's lineage then, plus the part from the moved company down), so a partner a
company moved under does not read the history from before it arrived. When the old parent has been
deleted since, its place is unknown: the events go under the platform and a parent that matches no
company ("/<platform>/0/"), so only the platform and the moved subtree itself read them."""

from django.db import migrations, models


def backfill(apps, schema_editor):
    AuditEvent = apps.get_model("companies", "AuditEvent")
    Company = apps.get_model("companies", "Company")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("UPDATE companies_auditevent e SET lineage = c.lineage FROM companies_company c "
                       "WHERE c.id = e.company_id")
        root = Company.objects.filter(parent__isnull=True).values_list("lineage", flat=True).first() or "/"
        undone: list[tuple[str, str]] = []  # (marker of a moved company, lineage of its old parent then)
        moves = (AuditEvent.objects.filter(action="company.move", object_type="company")
                 .order_by("-id").values_list("id", "object_id", "before"))
        for event_id, moved_id, before in moves:
            old_parent_id = (before or {}).get("parent")
            old_parent = Company.objects.filter(pk=old_parent_id).values_list("lineage", flat=True).first()
            if not old_parent:  # deleted since: no company may read the moved subtree's earlier history by it
                old_parent = f"{root}0/"
            for marker, prefix in undone:  # the old parent's lineage as it was then
                if marker in old_parent:
                    old_parent = prefix + old_parent[old_parent.index(marker) + 1:]
            marker = f"/{moved_id}/"
            cursor.execute("UPDATE companies_auditevent SET lineage = %s || substr(lineage, strpos(lineage, %s) + 1) "
                           "WHERE id <= %s AND strpos(lineage, %s) > 0",
                           [old_parent, marker, event_id, marker])
            undone.append((marker, old_parent))


class Migration(migrations.Migration):

    dependencies = [
        ('companies', '0003_company_plan'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='lineage',
            field=models.CharField(blank=True, default='', editable=False, max_length=2000),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
