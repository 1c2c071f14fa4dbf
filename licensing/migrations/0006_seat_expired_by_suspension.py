from django.db import migrations, models
from django.db.models import F, Q


def backfill(apps, schema_editor):
    """H4: every company suspended now, with a licence row or not: its endpoints expired from its
    suspended_at on were expired by the suspension (the hook expired them at the same moment, and
    registrations during it later) and come back on reactivation; a trial that ran out before stays
    expired. A suspended company with no suspended_at (none is expected) gets all its expired rows
    back, as reactivation did before d29d8f8."""
    SeatAssignment = apps.get_model("licensing", "SeatAssignment")
    SeatAssignment.objects.filter(state="expired", company__status="suspended").filter(
        Q(company__suspended_at__isnull=True) | Q(expired_at__gte=F("company__suspended_at"))
    ).update(expired_by_suspension=True)


class Migration(migrations.Migration):

    dependencies = [
        ('companies', '0002_importjob'),
        ('licensing', '0005_license_seats_expired_at'),
    ]

    operations = [
        migrations.RemoveField(
            model_name='license',
            name='seats_expired_at',
        ),
        migrations.AddField(
            model_name='seatassignment',
            name='expired_by_suspension',
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
