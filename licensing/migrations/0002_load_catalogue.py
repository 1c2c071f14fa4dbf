from django.db import migrations


def load(apps, schema_editor):
    from licensing.catalogue import catalogue_load

    catalogue_load(item_model=apps.get_model("licensing", "CatalogItem"),
                   rule_model=apps.get_model("licensing", "ModelRule"))


class Migration(migrations.Migration):
    dependencies = [("licensing", "0001_initial")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
