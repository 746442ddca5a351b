from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations, models
import django.utils.timezone

# The rate limits' shared history when there is no Redis (settings.CACHES
# "throttle"). Created whatever the cache backend today, so that switching
# from Redis to the database later needs no extra step.
THROTTLE_CACHE_TABLE = "videogen_throttle_cache"


def create_cache_table(apps, schema_editor):
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, THROTTLE_CACHE_TABLE, dry_run=False)


def drop_cache_table(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE IF EXISTS {THROTTLE_CACHE_TABLE}")


class Migration(migrations.Migration):
    dependencies = [("jobs", "0013_webhooks_delete_retention")]

    operations = [
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(blank=True, default="", max_length=100)),
                ("user_id", models.CharField(max_length=100)),
                ("operator", models.BooleanField(default=False)),
                ("prefix", models.CharField(max_length=32, unique=True)),
                ("hashed", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"verbose_name": "API key", "db_table": "videogen_api_keys", "ordering": ["-created_at"]},
        ),
        migrations.RunPython(create_cache_table, drop_cache_table),
        migrations.CreateModel(
            name='WorkerGpu',
            fields=[
                ('worker', models.CharField(max_length=200, primary_key=True, serialize=False)),
                ('host', models.CharField(max_length=200)),
                ('device', models.CharField(max_length=50)),
                ('used_bytes', models.BigIntegerField()),
                ('peak_bytes', models.BigIntegerField()),
                ('updated_at', models.DateTimeField()),
            ],
            options={
                'db_table': 'videogen_worker_gpus',
            },
        ),
        migrations.CreateModel(
            name='WorkerHost',
            fields=[
                ('cluster', models.CharField(max_length=200, primary_key=True, serialize=False)),
                ('host', models.CharField(max_length=200)),
                ('workers', models.PositiveIntegerField(default=0)),
                ('beat_at', models.DateTimeField()),
            ],
            options={
                'db_table': 'videogen_worker_hosts',
            },
        ),
        migrations.CreateModel(
            name='MetricSeries',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100)),
                ('labels', models.CharField(max_length=500)),
                ('value', models.FloatField(default=0)),
            ],
            options={
                'db_table': 'videogen_metric_series',
                'constraints': [models.UniqueConstraint(fields=('name', 'labels'), name='metric_series_unique')],
            },
        ),
    ]
