import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

# django-q2's scheduler (the default cluster's) runs both every so often.
SCHEDULES = {
    "videogen: send due webhooks": {"func": "jobs.tasks.send_due_webhooks", "minutes": 1},
    "videogen: expire old outputs": {"func": "jobs.tasks.expire_outputs", "minutes": 60},
}


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, fields in SCHEDULES.items():
        Schedule.objects.using(schema_editor.connection.alias).update_or_create(
            name=name, defaults={**fields, "schedule_type": "I", "repeats": -1}
        )


def delete_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.using(schema_editor.connection.alias).filter(name__in=list(SCHEDULES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0012_fair_share"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="videogenerationjob",
            name="webhook_url",
            field=models.CharField(blank=True, default="", max_length=2000),
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="webhook_events",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="videogenerationjob",
            name="expired_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="WebhookEvent",
            fields=[
                ("id", models.CharField(max_length=40, primary_key=True, serialize=False)),
                ("type", models.CharField(max_length=32)),
                ("url", models.CharField(max_length=2000)),
                ("payload", models.TextField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "state",
                    models.CharField(
                        choices=[("pending", "Pending"), ("delivered", "Delivered"), ("failed", "Failed")],
                        default="pending",
                        max_length=16,
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("next_attempt_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("retry_until", models.DateTimeField()),
                ("locked_until", models.DateTimeField(blank=True, null=True)),
                ("delivered_at", models.DateTimeField(blank=True, null=True)),
                ("last_error", models.TextField(blank=True, default="")),
                (
                    "job",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="webhook_events_sent",
                        to="jobs.videogenerationjob",
                    ),
                ),
            ],
            options={
                "db_table": "webhook_events",
                "ordering": ["created_at"],
                "indexes": [models.Index(fields=["state", "next_attempt_at"], name="webhook_due_idx")],
            },
        ),
        migrations.CreateModel(
            name="WebhookAttempt",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("attempted_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("status_code", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("latency_ms", models.PositiveIntegerField()),
                ("response_body", models.TextField(blank=True, default="")),
                ("error", models.TextField(blank=True, default="")),
                (
                    "event",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempt_log",
                        to="jobs.webhookevent",
                    ),
                ),
            ],
            options={"db_table": "webhook_attempts", "ordering": ["attempted_at", "id"]},
        ),
        migrations.RunPython(create_schedules, delete_schedules),
    ]
