"""
Webhooks: a job's state changes, sent to its webhook_url as Standard
Webhooks (https://www.standardwebhooks.com/) signed with
VIDEOGEN_WEBHOOK_SECRET.

The state change records a WebhookEvent in its own transaction (a
receiver of job_status_changed, which VideoGenerationJob.transition sends); a django-q2 task on the webhook queue
(VIDEOGEN_WEBHOOK_QUEUE, its own cluster) sends it, so no generation waits on
a receiver. Each attempt is stored. Timeouts, connection errors, 5xx and 429
are retried with exponential backoff and jitter for VIDEOGEN_WEBHOOK_RETRY_HOURS;
any other 4xx ends the event. A scheduled sweep queues events whose retry is
due, or whose task was lost: delivery is at least once, and receivers drop
duplicates by the webhook-id header.

Requests go only to public addresses unless the host is in
VIDEOGEN_WEBHOOK_ALLOWED_HOSTS, checked at submit and again for the address
actually connected to (the resolved address is pinned for the connection, so
a DNS answer that changes in between cannot point it inside). Redirects are
never followed.

sending.py makes one request; delivery.py records events and retries them.
"""
