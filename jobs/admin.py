"""
The operators' view of every user's jobs.

It must stay fast on a table of millions of rows: every column is computed
from the row itself (no query per row), the page never counts the whole table
(see EstimatedCountPaginator), each filter narrows by an indexed column with
submitted_at as the index's second column so "newest first" reads the index
in order, and facet counts are off.
"""

import datetime

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.template.defaultfilters import filesizeformat
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from generation.params import PARAM_NAMES
from jobs.scheduling.deployment import known_models
from jobs.scheduling.estimates import queue_standing
from jobs.api.inputs import IMAGE_FIELDS
from jobs.scheduling.fleet import fleet_status
from jobs.models import (
    COUNT_CAP,
    ApiKey,
    ClusterBeat,
    Status,
    UserWeight,
    VideoGenerationJob,
    WebhookAttempt,
    WebhookEvent,
    count_up_to,
)
from jobs.services.operations import Outcome, jobs_cancel, jobs_rerun
from jobs.services.lifecycle import job_delete
from jobs.text import plural
from jobs.webhooks.delivery import resend

# An action re-runs or cancels jobs one conditional update at a time, inside
# the request; more than this belongs to `manage.py rerun_failed_jobs`.
ACTION_LIMIT = 1_000
PROMPT_EXCERPT_CHARS = 60
# The job page shows the model and the prompts in their own places, the other generation parameters together.
PARAMETER_FIELDS = [name for name in PARAM_NAMES if name not in {"prompt", "negative_prompt", "model_name"}]

STATUS_COLOURS = {
    Status.PENDING: "#6c757d",
    Status.RUNNING: "#0b5ed7",
    Status.COMPLETED: "#198754",
    Status.FAILED: "#dc3545",
    Status.CANCELLED: "#9a6700",
}


class EstimatedCountPaginator(Paginator):
    """
    A paginator whose count never scans a large table. Unfiltered on
    PostgreSQL, a big table is counted from the planner's statistics
    (pg_class.reltuples, kept fresh by autovacuum); otherwise rows are counted
    up to COUNT_CAP. `count_kind` tells the template which it got: "exact",
    "estimate" or "at_least".
    """

    count_kind = "exact"

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not queryset.query.where and connection.vendor == "postgresql":
            estimate = _estimated_rows(queryset.model._meta.db_table)
            if estimate > COUNT_CAP:
                self.count_kind = "estimate"
                return estimate
        counted, exact = count_up_to(queryset, COUNT_CAP)
        if not exact:
            self.count_kind = "at_least"
        return counted


def _estimated_rows(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    # -1 until the table is first analysed.
    return max(row[0], 0) if row else 0


class UserIdFilter(admin.SimpleListFilter):
    """
    A box to type a user_id into: there are far too many users for a list of
    links, and the exact match is served by the (user_id, submitted_at) index
    where the search box's substring match cannot be.
    """

    title = "user id"
    parameter_name = "user_id"
    template = "admin/jobs/user_id_filter.html"

    def lookups(self, request, model_admin):
        return ()

    def has_output(self) -> bool:
        return True

    def choices(self, changelist):
        # One "choice": what the template needs to render its form.
        yield {
            "value": self.value() or "",
            "hidden": [
                (name, value)
                for name, values in changelist.filter_params.items()
                if name != self.parameter_name
                for value in values
            ],
            "clear_link": changelist.get_query_string(remove=[self.parameter_name]),
        }

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        if value:
            return queryset.filter(user_id=value)
        return queryset


class ModelNameFilter(admin.SimpleListFilter):
    """
    The models this installation knows, without asking the table: listing the
    distinct model_name values would read every row on every page load.
    """

    title = "model"
    parameter_name = "model_name"

    def lookups(self, request, model_admin):
        names = set(known_models())
        if self.value():
            # A model since removed from the catalogue stays filterable by URL.
            names.add(self.value())
        return [(name, name) for name in sorted(names)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(model_name=self.value())
        return queryset


class FailureClassFilter(admin.ChoicesFieldListFilter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "failure class"


class ExpiredFilter(admin.SimpleListFilter):
    title = "files expired"
    parameter_name = "expired"

    def lookups(self, request, model_admin):
        return [("yes", "Expired (files removed)"), ("no", "Kept")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(expired_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(expired_at__isnull=True)
        return queryset


class WebhookEventInline(admin.TabularInline):
    """The job's webhook deliveries; each links to its attempts and the action that sends it again."""

    model = WebhookEvent
    fields = ["event_link", "type", "state", "attempts", "created_at", "next_attempt_at", "delivered_at", "last_error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="event")
    def event_link(self, event: WebhookEvent) -> str:
        # quote(): the admin reads "_22", "_40" ... in a URL's pk as escapes, and
        # an event id is "msg_" and hex digits.
        url = reverse("admin:jobs_webhookevent_change", args=[quote(event.pk)])
        return format_html('<a href="{}">{}</a>', url, event.pk)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["attempted_at", "status_code", "latency", "response_body", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="latency")
    def latency(self, attempt: WebhookAttempt) -> str:
        return shown_duration(attempt.latency_ms / 1000)


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "job", "state", "attempts", "created_at", "next_attempt_at", "delivered_at"]
    list_filter = ["state", "type"]
    search_fields = ["id__exact", "job__id__exact"]
    ordering = ["-created_at"]
    list_select_related = ["job"]
    show_facets = admin.ShowFacets.NEVER
    actions = ["send_again"]
    inlines = [WebhookAttemptInline]
    fields = ["id", "job", "type", "url", "state", "attempts", "created_at", "next_attempt_at", "retry_until",
              "delivered_at", "last_error", "payload"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Events go with their job.
        return False

    @admin.action(description="Send selected webhook events again", permissions=["change"])
    def send_again(self, request, queryset) -> None:
        sent = sum(resend(event) for event in queryset[:ACTION_LIMIT])
        self.message_user(request, f"Queued {plural(sent, 'event')} to be sent again.", messages.SUCCESS)


@admin.register(VideoGenerationJob)
class VideoGenerationJobAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "user_id",
        "status_badge",
        "priority",
        "progress_bar",
        "queue_position",
        "model_name",
        "prompt_excerpt",
        "submitted_at",
        "run_time",
        "thumbnail",
    ]
    list_display_links = ["short_id"]
    # Submission dates as Django's own date filter (today, the past 7 days,
    # this month, this year): a range on submitted_at that its index serves,
    # and no query to draw. Django's date_hierarchy would ask the database
    # for the distinct years, months or days of every matching row on each
    # page load: most of the page's time on 100,000 jobs (bench/RESULTS.md).
    list_filter = [
        UserIdFilter,
        "status",
        ModelNameFilter,
        ("error_code", FailureClassFilter),
        ("submitted_at", admin.DateFieldListFilter),
        ExpiredFilter,
        "mode",
        "priority",
    ]
    # An exact user_id (ids are exact), or a substring of the prompt.
    search_fields = ["user_id__exact", "prompt"]
    search_help_text = "An exact user_id, or words from the prompt."
    ordering = ["-submitted_at"]
    # Sorting by any other column sorts the whole table on every page load;
    # the filters narrow by those columns instead, from their indexes.
    sortable_by = ["submitted_at"]
    list_per_page = 50
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ["rerun_selected", "cancel_selected"]

    fieldsets = [
        (
            None,
            {"fields": ["id", "user_id", "status_badge", "priority", "progress_bar", "current_step", "attempts",
                        "model_name"]},
        ),
        ("Prompt", {"fields": ["prompt", "negative_prompt"]}),
        ("Inputs", {"fields": ["mode", "input_images", "image_fit", "extend_job_id", "inputs"]}),
        ("Parameters", {"fields": PARAMETER_FIELDS}),
        ("Timestamps", {"fields": ["submitted_at", "start_deadline_at", "started_at", "completed_at", "run_time",
                                   "expires", "expired_at"]}),
        ("Webhook", {"fields": ["webhook_url", "webhook_events"]}),
        ("Result", {"fields": ["error_code", "error_text", "video_player", "poster_image", "file_size",
                               "video_duration"]}),
        ("Worker", {"classes": ["collapse"], "fields": ["worker", "heartbeat_at", "preemptions", "yield_requested_at",
                                                         "run_info"]}),
    ]

    inlines = [WebhookEventInline]

    # Jobs are made by the API and change only through jobs/services/lifecycle.py:
    # nothing on the job page is editable, and nothing is added here. A
    # delete goes through job_delete, as DELETE /job does: the job is
    # cancelled if active, and its files go with it.
    def get_readonly_fields(self, request, obj=None):
        return [name for fieldset in self.fieldsets for name in fieldset[1]["fields"]]

    def get_changelist_instance(self, request):
        # A date no calendar has, in a hand-edited URL (?submitted_at__year=0),
        # fails only when the list's query runs: answer it as Django answers
        # any other bad lookup (the list, flagged ?e=1), not with a 500.
        try:
            return super().get_changelist_instance(request)
        except (ValueError, OverflowError) as exc:
            raise IncorrectLookupParameters(exc) from exc

    def has_add_permission(self, request) -> bool:
        return False

    def delete_model(self, request, obj: VideoGenerationJob) -> None:
        job_delete(obj)

    def delete_queryset(self, request, queryset) -> None:
        for job in queryset:
            job_delete(job)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context.update({"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False})
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    # --- Columns: each computed from the row alone, so a page costs no extra query.

    @admin.display(description="job", ordering="id")
    def short_id(self, job: VideoGenerationJob) -> str:
        return str(job.id)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: VideoGenerationJob) -> str:
        return format_html(
            '<span class="job-status job-status-{}" style="color: #fff; background: {}; padding: 1px 6px;'
            ' border-radius: 8px; white-space: nowrap;">{}</span>',
            job.status,
            STATUS_COLOURS.get(job.status, "#6c757d"),
            job.get_status_display(),
        )

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, job: VideoGenerationJob) -> str:
        return format_html(
            '<progress max="100" value="{}" title="{}%" style="width: 6em;">{}%</progress> {}%',
            job.progress,
            job.progress,
            job.progress,
            job.progress,
        )

    @admin.display(description="prompt")
    def prompt_excerpt(self, job: VideoGenerationJob) -> str:
        return Truncator(job.prompt).chars(PROMPT_EXCERPT_CHARS)

    @admin.display(description="queue")
    def queue_position(self, job: VideoGenerationJob) -> str:
        # From the per-process snapshot (jobs/scheduling/estimates.py): no query per row.
        position, _ = queue_standing(job)
        return EMPTY if position is None else f"#{position}"

    @admin.display(description="run time")
    def run_time(self, job: VideoGenerationJob) -> str:
        if job.started_at is None:
            return EMPTY
        if job.completed_at is not None:
            return shown_duration(job.completed_at - job.started_at)
        if job.status == Status.RUNNING:
            return shown_duration(timezone.now() - job.started_at) + " so far"
        return EMPTY

    @admin.display(description="poster")
    def thumbnail(self, job: VideoGenerationJob) -> str:
        # The inputs first, then the poster: what went in beside what came out.
        urls = [reverse(field, args=[job.id]) for field in IMAGE_FIELDS if getattr(job, field)]
        if job.status == Status.COMPLETED and job.poster:
            urls.append(reverse("poster", args=[job.id]))
        if not urls:
            return EMPTY
        return format_html_join(
            "",
            '<img src="{}" alt="" loading="lazy" style="height: 40px; width: auto; display: inline-block; margin-right: 4px;">',
            ((url,) for url in urls),
        )

    @admin.display(description="images")
    def input_images(self, job: VideoGenerationJob) -> str:
        shown = [(field, reverse(field, args=[job.id])) for field in IMAGE_FIELDS if getattr(job, field)]
        if not shown:
            return EMPTY
        return format_html_join(
            "",
            '<figure style="display: inline-block; margin: 0 8px 0 0;"><img src="{}" alt="{} of job {}" '
            'style="max-height: 180px; max-width: 320px;"><figcaption>{}</figcaption></figure>',
            ((url, field, job.id, field) for field, url in shown),
        )

    # --- The job page.

    @admin.display(description="expires at")
    def expires(self, job: VideoGenerationJob):
        return shown(job.expires_at)

    @admin.display(description="file size")
    def file_size(self, job: VideoGenerationJob) -> str:
        return shown_size(job.file_size_bytes)

    @admin.display(description="video duration")
    def video_duration(self, job: VideoGenerationJob) -> str:
        return shown_duration(job.video_duration_seconds)

    @admin.display(description="error")
    def error_text(self, job: VideoGenerationJob) -> str:
        if not job.error_message:
            return EMPTY
        return format_html('<pre style="white-space: pre-wrap; margin: 0;">{}</pre>', job.error_message)

    @admin.display(description="video")
    def video_player(self, job: VideoGenerationJob) -> str:
        if job.status != Status.COMPLETED or not job.video:
            return EMPTY
        # The download view honours Range, so the player can seek; on S3 it
        # redirects to a presigned URL, which the player follows and seeks in.
        return format_html(
            '<video id="job-video" controls preload="metadata" src="{}" poster="{}"'
            ' style="max-width: 100%; width: {}px;"></video>',
            reverse("download", args=[job.id]),
            reverse("poster", args=[job.id]) if job.poster else "",
            # Its own size, but big enough for the controls and not wider than the page.
            min(max(job.width, 320), 720),
        )

    @admin.display(description="poster")
    def poster_image(self, job: VideoGenerationJob) -> str:
        if job.status != Status.COMPLETED or not job.poster:
            return EMPTY
        return format_html(
            '<img src="{}" alt="poster of job {}" style="max-width: 360px;">',
            reverse("poster", args=[job.id]),
            job.id,
        )

    # --- Actions. Both go through jobs.services.operations, the same code as the command.

    @admin.action(description="Re-run selected failed jobs", permissions=["change"])
    def rerun_selected(self, request, queryset) -> None:
        self._act(request, queryset, jobs_rerun, doing="Re-running", done="Re-ran",
                  why="only failed jobs can be re-run")

    @admin.action(description="Cancel selected pending or running jobs", permissions=["change"])
    def cancel_selected(self, request, queryset) -> None:
        self._act(request, queryset, jobs_cancel, doing="Cancelling", done="Cancelled",
                  why="only pending or running jobs can be cancelled")

    def _act(self, request, queryset, operation, *, doing: str, done: str, why: str) -> None:
        if not self._refuse_if_too_many(request, queryset, doing):
            self._report(request, operation(queryset), done=done, why=why)

    def _refuse_if_too_many(self, request, queryset, doing: str) -> bool:
        if queryset.order_by()[: ACTION_LIMIT + 1].count() <= ACTION_LIMIT:
            return False
        self.message_user(
            request,
            f"{doing} more than {ACTION_LIMIT} jobs at once is refused here: narrow the selection, or use "
            f"`python manage.py rerun_failed_jobs` for failed jobs.",
            messages.ERROR,
        )
        return True

    def _report(self, request, outcome: Outcome, *, done: str, why: str) -> None:
        changed = len(outcome.changed)
        self.message_user(
            request,
            f"{done} {plural(changed, 'job')}.",
            messages.SUCCESS if changed else messages.WARNING,
        )
        if outcome.skipped:
            skipped = outcome.skipped_count
            self.message_user(
                request,
                f"Skipped {plural(skipped, 'job')} ({why}): {outcome.describe_skipped()}.",
                messages.WARNING,
            )


# --- How the admin shows values: durations and sizes as people read them, and
# nothing as Django's own empty value (one dash), wherever it comes from.

EMPTY = admin.site.empty_value_display


def shown_duration(seconds: float | datetime.timedelta | None) -> str:
    """`667 ms`, `1.2 s`, `1 min 30 s`, `2 h 01 min`; EMPTY for none."""
    if seconds is None:
        return EMPTY
    if isinstance(seconds, datetime.timedelta):
        seconds = seconds.total_seconds()
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def shown_size(count: int | None) -> str:
    """A size in bytes as Django's filesizeformat writes it (`2.1 KB`); EMPTY for none."""
    return EMPTY if count is None else filesizeformat(count)


def shown(value):
    """Any other value; EMPTY for none (Django's admin writes "None" for a property that is)."""
    return EMPTY if value in (None, "", [], {}) else value


@admin.register(UserWeight)
class UserWeightAdmin(admin.ModelAdmin):
    """Fair-share weights (jobs/scheduling/queue.py): weight 2 gets twice the worker time; unlisted users weigh 1."""

    list_display = ["user_id", "weight", "note"]
    list_editable = ["weight", "note"]
    search_fields = ["user_id__exact"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are made by `manage.py create_api_key` (the only time the key is shown); here they are listed and revoked."""

    list_display = ("prefix", "name", "user_id", "operator", "scopes", "created_at", "revoked_at")
    list_filter = ("operator", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("=user_id", "=prefix", "name")
    readonly_fields = ("prefix", "name", "user_id", "operator", "scopes", "created_at", "revoked_at")
    exclude = ("hashed",)
    actions = ["revoke_keys"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Revoked keys stay listed, so it is clear which key stopped when.
        return False

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        revoked = sum(key.revoke() for key in queryset)
        self.message_user(request, f"Revoked {plural(revoked, 'key')}; {queryset.count() - revoked} already were.", messages.SUCCESS)


@admin.register(ClusterBeat)
class FleetAdmin(admin.ModelAdmin):
    """Every cluster, worker process and queue, from the one liveness record (jobs/scheduling/fleet.py); read only."""

    def has_view_permission(self, request, obj=None) -> bool:
        # Whoever may see the jobs may see what runs them.
        return request.user.has_perm("jobs.view_videogenerationjob")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "title": "Fleet", "opts": self.model._meta,
                   **fleet_status()}
        return TemplateResponse(request, "admin/jobs/fleet.html", context)
