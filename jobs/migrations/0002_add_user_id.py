# Jobs get an owner. Nullable first: existing rows have none until 0003.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="videogenerationjob",
            name="user_id",
            field=models.CharField(max_length=100, null=True),
        ),
    ]
