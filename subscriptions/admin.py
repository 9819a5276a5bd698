import csv
import io

from django.contrib import admin, messages
from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from . import csvio, delivery
from .conf import conf
from .forms import ImportForm
from .models import Delivery, Follow, Mailing, Subscriber


class TopicFilter(admin.SimpleListFilter):
    title = "follows"
    parameter_name = "topic"

    def lookups(self, request, model_admin):
        # The provider's suggestions, and the chosen one: a site may have
        # 10,000 topics, too many for a sidebar.
        offered = conf.search_topics("", limit=30)
        value = self.value()
        if value and value != "__everything__" and value not in dict(offered):
            offered.append((value, conf.topic_labels([value]).get(value, value)))
        return [("__everything__", "Everything"), *offered]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "__everything__":
            return queryset.filter(follows_everything=True)
        if value:
            return queryset.filter(pk__in=Follow.objects.filter(topic=value).values("subscriber"))
        return queryset


class RemindedFilter(admin.SimpleListFilter):
    title = "reminded to confirm"
    parameter_name = "reminded"

    def lookups(self, request, model_admin):
        return [("yes", "Reminded"), ("no", "Not reminded")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(reminded_at__isnull=self.value() == "no")
        return queryset


class _Echo:
    """A file-like object whose write() returns the line: lets csv.writer
    feed a StreamingHttpResponse."""

    def write(self, value):
        return value


def stream_csv(queryset, filename):
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(csvio.COLUMNS)
        for row in csvio.rows(queryset):
            yield writer.writerow(row)

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class AdminStyles:
    class Media:
        css = {"all": ["subscriptions/admin.css"]}


def _with_topic_labels(response, keys_of):
    """Give each row of a changelist response the labels of every topic the
    page shows, looked up once (not once per row)."""
    changelist = getattr(response, "context_data", None) and response.context_data.get("cl")
    if changelist is not None:
        rows = changelist.result_list = list(changelist.result_list)
        labels = conf.topic_labels({key for row in rows for key in keys_of(row)})
        for row in rows:
            row.topic_labels = labels
    return response


def topic_names(keys, labels, limit=4):
    """ "Jeff Sessions, El Paso and 3 more": the labels of these keys."""
    names = [labels.get(key, key) for key in keys]
    if len(names) > limit:
        return f"{', '.join(names[:limit])} and {len(names) - limit} more"
    return ", ".join(names)


def truncated(value, css_class="truncate"):
    """A long value cut short with an ellipsis by CSS; all of it on hover."""
    return format_html('<span class="{}" title="{}">{}</span>', css_class, value, value)


def pending_policy():
    """What happens to pending addresses, and what the last runs did."""
    remind, max_age = conf.REMIND_AFTER, conf.PENDING_MAX_AGE
    parts = [
        f"Pending addresses get one reminder {conf.duration('REMIND_AFTER').days} days after "
        "their confirmation email"
        if remind
        else "Pending addresses get no reminder",
        f"and are deleted after {conf.duration('PENDING_MAX_AGE').days} days."
        if max_age
        else "and are kept.",
    ]
    notes = delivery.housekeeping()
    for what, label in (("reminded", "reminded"), ("deleted", "deleted")):
        if what in notes:
            when, count = notes[what]
            parts.append(f"Last run {when:%Y-%m-%d %H:%M}: {count} {label}.")
    return " ".join(parts)


@admin.register(Subscriber)
class SubscriberAdmin(AdminStyles, admin.ModelAdmin):
    list_display = ["address", "status", "how_often", "follows", "joined"]
    list_filter = ["status", "frequency", TopicFilter, RemindedFilter, "created_at"]
    search_fields = ["email", "name"]
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False  # A COUNT(*) per page view is slow at a million rows.
    actions = ["resend_confirmation", "unsubscribe", "suppress", "export_csv"]
    readonly_fields = [
        "email",
        "status",
        "follows_everything",
        "topics",
        "consent_at",
        "consent_ip",
        "consent_user_agent",
        "consent_page",
        "consent_wording",
        "created_at",
        "confirmation_sent_at",
        "reminded_at",
        "confirmed_at",
        "unsubscribed_at",
    ]
    fieldsets = [
        (None, {"fields": ["email", "name", "status", "frequency"]}),
        ("Follows", {"fields": ["follows_everything", "topics"]}),
        (
            "Consent",
            {
                "fields": [
                    "consent_at",
                    "consent_page",
                    "consent_wording",
                    "consent_ip",
                    "consent_user_agent",
                ]
            },
        ),
        (
            "History",
            {
                "fields": [
                    "created_at",
                    "confirmation_sent_at",
                    "reminded_at",
                    "confirmed_at",
                    "unsubscribed_at",
                ]
            },
        ),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("follows")

    def has_add_permission(self, request):
        # Subscribers come from the form (with consent) or a CSV import.
        return False

    @admin.display(description="email and name", ordering="email")
    def address(self, obj):
        if not obj.name:
            return truncated(obj.email)
        return format_html("{}<br>{}", truncated(obj.email), truncated(obj.name, "truncate name"))

    @admin.display(description="how often", ordering="frequency")
    def how_often(self, obj):
        return obj.frequency

    @admin.display(description="joined", ordering="created_at")
    def joined(self, obj):
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            obj.created_at.isoformat(),
            obj.created_at.strftime("%Y-%m-%d %H:%M"),
            obj.created_at.strftime("%-d %b %Y"),
        )

    @admin.display(description="follows")
    def follows(self, obj):
        if obj.follows_everything:
            return "everything"
        keys = [f.topic for f in obj.follows.all()]
        labels = getattr(obj, "topic_labels", None)
        return topic_names(keys, conf.topic_labels(keys) if labels is None else labels)

    @admin.display(description="topics")
    def topics(self, obj):
        keys = obj.topics()
        labels = conf.topic_labels(keys)
        return ", ".join(labels.get(key, key) for key in keys) or "—"

    def changelist_view(self, request, extra_context=None):
        counts = Subscriber.objects.counts_by_status()
        extra_context = {
            **(extra_context or {}),
            "status_counts": [(status.label, counts[status]) for status in Subscriber.Status],
            "pending_policy": pending_policy(),
        }
        response = super().changelist_view(request, extra_context)
        return _with_topic_labels(response, lambda obj: [f.topic for f in obj.follows.all()])

    def get_urls(self):
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="subscriptions_subscriber_import",
            ),
            path(
                "export/",
                self.admin_site.admin_view(self.export_view),
                name="subscriptions_subscriber_export",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request):
        if not self.has_change_permission(request):
            return redirect("admin:index")
        result = None
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            lines = io.TextIOWrapper(
                upload.file, encoding="utf-8-sig", errors="replace", newline=""
            )
            confirmed = form.cleaned_data["confirmed"]
            note = (
                f"Imported from {upload.name} by {request.user} on {timezone.now():%Y-%m-%d}; "
                + (
                    "consent collected elsewhere."
                    if confirmed
                    else "confirmation requested by email."
                )
            )
            try:
                result = csvio.import_csv(lines, confirmed=confirmed, note=note)
            except ValueError as e:
                form.add_error("file", str(e))
            else:
                level = messages.WARNING if result.error_count else messages.SUCCESS
                self.message_user(
                    request,
                    f"{result.created} added, {result.duplicates} already there or repeated, "
                    f"{result.error_count} bad rows skipped.",
                    level,
                )
        return render(
            request,
            "admin/subscriptions/subscriber/import.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Import subscribers",
                "form": form,
                "result": result,
            },
            status=400 if form.errors else 200,
        )

    def export_view(self, request):
        """Every subscriber the list shows with its current filters."""
        if not self.has_view_permission(request):
            return redirect("admin:index")
        changelist = self.get_changelist_instance(request)
        return stream_csv(changelist.get_queryset(request), "subscribers.csv")

    @admin.action(description="Resend the confirmation email (pending only)")
    def resend_confirmation(self, request, queryset):
        sent = sum(
            delivery.request_confirmation(subscriber)
            for subscriber in queryset.filter(status=Subscriber.Status.PENDING)
        )
        self.message_user(
            request,
            f"{sent} confirmation emails queued. Addresses that are not pending, or got one "
            "within the last window, were skipped.",
        )

    @admin.action(description="Unsubscribe")
    def unsubscribe(self, request, queryset):
        done = sum(subscriber.unsubscribe() for subscriber in queryset)
        self.message_user(request, f"{done} unsubscribed.")

    @admin.action(description="Suppress: never email again")
    def suppress(self, request, queryset):
        done = sum(subscriber.suppress() for subscriber in queryset)
        self.message_user(request, f"{done} suppressed.")

    @admin.action(description="Export as CSV")
    def export_csv(self, request, queryset):
        return stream_csv(queryset, "subscribers.csv")


@admin.register(Mailing)
class MailingAdmin(AdminStyles, admin.ModelAdmin):
    list_display = ["title", "status", "progress_and_counts", "topic_list"]
    list_filter = ["status", "created_at"]
    search_fields = ["title", "post_key"]
    date_hierarchy = "created_at"
    actions = ["pause", "resume", "retry_failed", "send_test"]
    fields = [
        "title",
        "url",
        "status",
        "progress",
        "counts",
        "topic_list",
        "published_at",
        "created_at",
        "finished_at",
        "ledger",
        "subject",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).with_progress()

    def has_add_permission(self, request):
        return False  # Mailings are made by publishing a post.

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        return _with_topic_labels(response, lambda mailing: mailing.topics)

    @admin.display(description="Topics")
    def topic_list(self, mailing):
        if not mailing.topics:
            return "— (readers who follow everything)"
        labels = getattr(mailing, "topic_labels", None)
        if labels is None:
            labels = conf.topic_labels(mailing.topics)
        return topic_names(mailing.topics, labels, limit=3)

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Sent", ordering="sent_count")
    def sent_count(self, mailing):
        return mailing.sent_count

    @admin.display(description="Failed", ordering="failed_count")
    def failed_count(self, mailing):
        return mailing.failed_count

    @admin.display(description="Pending", ordering="pending_count")
    def pending_count(self, mailing):
        return mailing.pending_count

    @admin.display(description="Progress")
    def progress(self, mailing):
        return progress_bar(mailing)

    @admin.display(description="Progress", ordering="pending_count")
    def progress_and_counts(self, mailing):
        return format_html(
            '{}<br><span class="help">{} sent · {} failed · {} to send</span>',
            progress_bar(mailing),
            mailing.sent_count,
            mailing.failed_count,
            mailing.pending_count,
        )

    @admin.display(description="Counts")
    def counts(self, mailing):
        counts = (
            f"{mailing.sent_count} sent, {mailing.failed_count} failed, {mailing.pending_count} pending, "
            f"{mailing.skipped_count} skipped, {mailing.digest_count} waiting for a digest"
        )
        if mailing.ambiguous_count:
            counts += (
                f"; {mailing.ambiguous_count} ambiguous (the connection was lost after the "
                "message was sent: the retry may have delivered it twice)"
            )
        return counts

    @admin.display(description="Recipients")
    def ledger(self, mailing):
        url = (
            reverse("admin:subscriptions_delivery_changelist") + f"?mailing__id__exact={mailing.pk}"
        )
        return format_html('<a href="{}">Every recipient and what happened</a>', url)

    @admin.action(description="Pause the selected mailings")
    def pause(self, request, queryset):
        done = sum(mailing.pause() for mailing in queryset)
        self.message_user(request, f"Paused {done} mailing(s).")

    @admin.action(description="Resume the selected mailings")
    def resume(self, request, queryset):
        done = sum(delivery.resume(mailing) for mailing in queryset)
        self.message_user(request, f"Resumed {done} mailing(s).")

    @admin.action(description="Retry failed deliveries")
    def retry_failed(self, request, queryset):
        done = sum(delivery.retry_failed(mailing) for mailing in queryset)
        self.message_user(request, f"Queued {done} failed deliveries again.")

    @admin.action(description="Send a test to me")
    def send_test(self, request, queryset):
        if not request.user.email:
            self.message_user(request, "Your account has no email address.", messages.ERROR)
            return
        for mailing in queryset:
            delivery.send_test(mailing, request.user.email)
        self.message_user(request, f"Sent {len(queryset)} test(s) to {request.user.email}.")


def progress_bar(mailing):
    """A bar of sent and failed over everything due to go out now."""
    total = (
        mailing.sent_count + mailing.failed_count + mailing.pending_count + mailing.skipped_count
    )
    done = total - mailing.pending_count
    percent = round(100 * done / total) if total else 100
    return format_html(
        '<progress value="{}" max="100" title="{}%">{}%</progress> {}%',
        percent,
        percent,
        percent,
        percent,
    )


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["mailing", "subscriber", "status", "attempts", "error", "sent_at"]
    list_filter = ["status", "mailing"]
    search_fields = ["subscriber__email", "mailing__title"]
    list_select_related = ["mailing", "subscriber"]
    show_full_result_count = False
    list_per_page = 100

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
