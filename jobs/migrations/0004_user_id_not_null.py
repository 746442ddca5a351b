from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0003_backfill_user_id")]

    operations = [
        migrations.AlterField(
            model_name="videogenerationjob",
            name="user_id",
            field=models.CharField(max_length=100),
        ),
    ]
