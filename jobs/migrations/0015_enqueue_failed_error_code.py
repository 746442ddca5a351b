from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0014_api_keys_and_metrics")]

    operations = [
        # A choice only: the column and its values are unchanged.
        migrations.AlterField(
            model_name="videogenerationjob",
            name="error_code",
            field=models.CharField(
                blank=True,
                choices=[
                    ("out_of_memory", "Out Of Memory"),
                    ("invalid_input", "Invalid Input"),
                    ("model_load", "Model Load"),
                    ("encode", "Encode"),
                    ("timeout", "Timeout"),
                    ("worker_lost", "Worker Lost"),
                    ("enqueue_failed", "Enqueue Failed"),
                    ("internal", "Internal"),
                ],
                default="",
                max_length=32,
            ),
        ),
    ]
