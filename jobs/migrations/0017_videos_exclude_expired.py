from django.db import migrations, models

# GET /videos leaves out expired jobs (their files are gone), so its two
# partial indexes hold only the rows it lists: the page is read in index
# order without filtering expired rows out.
LISTED = models.Q(("expired_at__isnull", True), ("status", "completed"))


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0016_queue_snapshots"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="videogenerationjob", name="job_user_completed_idx"),
        migrations.RemoveIndex(model_name="videogenerationjob", name="job_completed_idx"),
        migrations.AddIndex(
            model_name="videogenerationjob",
            index=models.Index(
                condition=LISTED, fields=["user_id", "-completed_at", "-id"], name="job_user_completed_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="videogenerationjob",
            index=models.Index(condition=LISTED, fields=["-completed_at", "-id"], name="job_completed_idx"),
        ),
    ]
