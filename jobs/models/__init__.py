"""
The jobs app's tables, each keeping its db_table (no migration moved a
table): the job and its files (job.py), the workers' and scheduler's
records (cluster.py), API keys (keys.py) and webhook events
(webhook_events.py). This package imports nothing else of jobs/: the modules
that act on a status change listen to jobs.models.signals.
"""

from jobs.models.cluster import ClusterBeat, ClusterBeatQuerySet, MetricSeries, QueueSnapshot, UserWeight, WorkerGpu
from jobs.models.job import (
    ACTIVE,
    COUNT_CAP,
    DEFAULT_WEBHOOK_EVENTS,
    FINISHED,
    MAX_URL_LENGTH,
    OUTPUT_FILES,
    STORED_FILES,
    USER_ID_MAX_LENGTH,
    WEBHOOK_STATUSES,
    ErrorCode,
    JobQuerySet,
    Mode,
    PendingFile,
    PendingFileQuerySet,
    Priority,
    Status,
    VideoGenerationJob,
    count_up_to,
    this_deployment,
)
from jobs.models.keys import API_KEY_PREFIX, MAX_CACHED_KEYS, ApiKey, ApiKeyQuerySet, hash_api_key
from jobs.models.webhook_events import WebhookAttempt, WebhookEvent

__all__ = [
    "ACTIVE", "API_KEY_PREFIX", "COUNT_CAP", "DEFAULT_WEBHOOK_EVENTS", "FINISHED", "MAX_CACHED_KEYS", "MAX_URL_LENGTH",
    "OUTPUT_FILES", "STORED_FILES", "USER_ID_MAX_LENGTH", "WEBHOOK_STATUSES", "ApiKey", "ApiKeyQuerySet", "ClusterBeat",
    "ClusterBeatQuerySet", "ErrorCode", "JobQuerySet", "MetricSeries", "Mode", "PendingFile", "PendingFileQuerySet",
    "Priority", "QueueSnapshot", "Status", "UserWeight", "VideoGenerationJob", "WebhookAttempt", "WebhookEvent",
    "WorkerGpu", "count_up_to", "hash_api_key", "this_deployment",
]
