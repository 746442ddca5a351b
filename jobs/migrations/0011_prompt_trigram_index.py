# PostgreSQL only: a trigram index so the admin's prompt search (Django's
# icontains: UPPER(prompt) LIKE UPPER('%word%')) stops reading every row.
# pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may
# install it. Where it cannot be installed, the index is skipped with a
# warning and search still works, only slower. SQLite has no such index.
import logging

from django.db import DatabaseError, migrations, transaction

logger = logging.getLogger(__name__)

INDEX = "job_prompt_trgm_idx"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {INDEX} ON video_generation_jobs USING gin (UPPER(prompt) gin_trgm_ops)"
            )
    except DatabaseError as exc:
        logger.warning("prompt search index not created (pg_trgm unavailable): %s", exc)


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("jobs", "0010_job_queued_at")]

    operations = [migrations.RunPython(create_index, drop_index, elidable=False)]
