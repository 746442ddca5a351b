# The image inputs (main) and the event stream's status_log (wt-events) both followed 0016.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0017_image_inputs"),
        ("jobs", "0017_job_status_log"),
    ]

    operations = []
