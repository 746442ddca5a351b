# The table as the original service created it, before jobs had owners.
import uuid

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="VideoGenerationJob",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("prompt", models.TextField()),
                ("fps", models.PositiveSmallIntegerField(default=24)),
                ("status", models.CharField(default="pending", max_length=32)),
                ("error_message", models.TextField(blank=True, default="")),
                ("video", models.FileField(blank=True, db_column="output_file_path", max_length=500, upload_to="")),
                ("file_size_bytes", models.BigIntegerField(blank=True, null=True)),
                ("video_duration_seconds", models.FloatField(blank=True, null=True)),
                ("submitted_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("completed_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"db_table": "video_generation_jobs"},
        ),
    ]
