# Rows from before user_id existed get the placeholder owner
# settings.VIDEOGEN_LEGACY_USER_ID (default "anonymous"), so 0004 can make the
# column NOT NULL without losing a row. One UPDATE, whatever the table's size.
from django.conf import settings
from django.db import migrations


def backfill_user_id(apps, schema_editor):
    Job = apps.get_model("jobs", "VideoGenerationJob")
    Job.objects.using(schema_editor.connection.alias).filter(user_id__isnull=True).update(
        user_id=settings.VIDEOGEN_LEGACY_USER_ID
    )


class Migration(migrations.Migration):
    dependencies = [("jobs", "0002_add_user_id")]

    # Going back leaves the owners in place: a nullable column holds them fine.
    operations = [migrations.RunPython(backfill_user_id, migrations.RunPython.noop)]
