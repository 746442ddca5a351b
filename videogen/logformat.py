"""
Log line formats (VIDEOGEN_LOG_FORMAT): `text` for people, `json` for log
pipelines. A line about a job carries its job_id, user_id, model, mode and
worker as record attributes (logging's `extra`, see log_fields()), never pasted into
the message, so each format can render them safely.
"""

import datetime
import json
import logging

JOB_FIELDS = ("job_id", "user_id", "model", "mode", "worker")


def log_fields(job=None, **fields) -> dict:
    """`extra=` for a line about a job: its id, user, model, mode and worker (where known)."""
    values = {}
    if job is not None:
        values = {
            "job_id": job.id,
            "user_id": job.user_id,
            "model": job.model_name,
            # Read only where loaded: a job fetched with only() must not cost a query per log line.
            "mode": job.__dict__.get("mode"),
            "worker": job.worker or None,
        }
    return {**values, **fields}


def quoted(value) -> str:
    """
    A client-supplied value as a JSON string literal with '=' escaped too, so
    that no user_id can make a line look like another job's: `x job=<id>`
    becomes "x job\\u003d<id>", which `grep job=<id>` does not match, and no
    control character or quote survives raw.
    """
    return json.dumps(str(value)).replace("=", "\\u003d")


class TextFormatter(logging.Formatter):
    """`time level logger job=<id> user_id="<quoted>" message`: job and user only on job lines."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            user_id = getattr(record, "user_id", None)
            prefix = f"job={job_id} " if user_id is None else f"job={job_id} user_id={quoted(user_id)} "
            record.message = prefix + record.message
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job_id, user_id, model, mode, worker (null when not a job's)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            entry[name] = None if value is None else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
