"""T5, L4, U1: every seat an endpoint held before its current one, kept apart (a suspension between two
of them is not a seat). Existing previous spells (one span each) are copied as they are."""

from django.db import migrations

import licensing.models

BACKFILL = """
UPDATE licensing_seatassignment
SET licensed_spells = tstzmultirange(tstzrange(
        CASE WHEN previously_licensed_from <= first_seen_at THEN '-infinity'::timestamptz
             ELSE LEAST(previously_licensed_from, previously_licensed_until) END,
        previously_licensed_until, '[]'))
WHERE previously_licensed_from IS NOT NULL AND previously_licensed_until IS NOT NULL
"""


class Migration(migrations.Migration):
    dependencies = [("licensing", "0006_seat_expired_by_suspension")]

    operations = [
        migrations.AddField(
            model_name="seatassignment",
            name="licensed_spells",
            field=licensing.models.TimeSpansField(blank=True, editable=False, null=True),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
    ]
