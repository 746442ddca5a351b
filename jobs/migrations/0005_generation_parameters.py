# What the original dropped on the floor: the generation parameters, progress
# and attempts, plus the indexes behind the two hot queries. Existing rows get
# the values the original service actually ran with (its request defaults,
# on CogVideoX-2b); their seed stays NULL because it was never recorded.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0004_user_id_not_null")]

    operations = [
        migrations.AddField(
            model_name="videogenerationjob",
            name="negative_prompt",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="model_name",
            field=models.CharField(default="cogvideox-2b", max_length=100),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="num_frames",
            field=models.PositiveSmallIntegerField(default=36),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="width",
            field=models.PositiveSmallIntegerField(default=720),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="height",
            field=models.PositiveSmallIntegerField(default=480),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="num_inference_steps",
            field=models.PositiveSmallIntegerField(default=50),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="guidance_scale",
            field=models.FloatField(default=4.5),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="seed",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="progress",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="attempts",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="poster",
            field=models.FileField(blank=True, max_length=500, upload_to=""),
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="started_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="videogenerationjob",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("running", "Running"),
                    ("completed", "Completed"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                ],
                default="pending",
                max_length=32,
            ),
        ),
        migrations.AlterModelOptions(
            name="videogenerationjob",
            options={"ordering": ["-submitted_at"]},
        ),
        migrations.AddIndex(
            model_name="videogenerationjob",
            index=models.Index(
                condition=models.Q(("status", "completed")),
                fields=["user_id", "-completed_at", "-id"],
                name="job_user_completed_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="videogenerationjob",
            index=models.Index(
                condition=models.Q(("status", "completed")),
                fields=["-completed_at", "-id"],
                name="job_completed_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="videogenerationjob",
            index=models.Index(fields=["status", "submitted_at"], name="job_status_submitted_idx"),
        ),
    ]
