import csv
import io

from django.contrib import admin, messages
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpResponseNotAllowed, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe

from . import csvio, delivery, emails, stats
from .conf import conf
from .forms import CorrectionForm, ImportForm
from .models import Correction, Delivery, Follow, Mailing, Subscriber
from .transports import QUOTA_WAIT


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
            "growth_chart": stats.growth_chart(),
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


# The undo window and corrections (delivery.cancel, delivery.correct).

CANCEL_PERMISSION = "subscriptions.change_mailing"
CORRECT_PERMISSION = "subscriptions.add_correction"


def _clock(seconds):
    """3:41, or 2:05:13 from an hour up."""
    minutes, secs = divmod(int(seconds + 0.999), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def send_countdown(mailing, cancel=True, script=False):
    """ "sending in 3:41 — Cancel" while a mailing waits for its send time
    (a live countdown with countdown.js; the time shows without it), and
    "Cancelled" once cancelled; "" otherwise. The Cancel button posts the
    form it sits in (a change list's or change form's, which carry the CSRF
    token) to the cancel view: admin pages cannot nest forms."""
    if mailing.status == Mailing.Status.CANCELLED:
        return format_html(
            '<strong class="send-state cancelled">{}</strong>', "Cancelled: nobody was mailed"
        )
    wait = mailing.seconds_to_send()
    if wait is None:
        return ""
    at = timezone.localtime(mailing.send_at)
    button = ""
    if cancel:
        button = format_html(
            ' — <button type="submit" class="button cancel-send" formaction="{}" '
            'formmethod="post" formnovalidate>Cancel</button>',
            reverse("admin:subscriptions_mailing_cancel", args=[mailing.pk]),
        )
    return format_html(
        '<span class="send-state" data-send-at="{}">sending {}<time datetime="{}" title="{}">{}</time>'
        "{}</span>{}",
        at.isoformat(),
        "in " if wait else "",
        at.isoformat(),
        at.strftime("%-d %b %Y %H:%M:%S %Z"),
        _clock(wait) if wait else "now",
        button,
        format_html('<script src="{}" defer></script>', static("subscriptions/countdown.js"))
        if script
        else "",
    )


def _previewed(signer, signed, text):
    """Whether `signed` is the signature of a preview of exactly `text`."""
    try:
        return signer.unsign(signed or "") == text
    except signing.BadSignature:
        return False


def _back(request, fallback):
    """Where the editor came from (the article or the mailing list), if it
    is this site; else `fallback`."""
    referer = request.headers.get("referer", "")
    if url_has_allowed_host_and_scheme(referer, {request.get_host()}, request.is_secure()):
        return referer
    return fallback


@admin.register(Mailing)
class MailingAdmin(AdminStyles, admin.ModelAdmin):
    list_display = ["title", "status_and_when", "progress_and_counts", "topic_list"]
    list_filter = ["status", "created_at"]
    search_fields = ["title", "post_key"]
    date_hierarchy = "created_at"
    actions = ["pause", "resume", "retry_failed", "send_test"]
    fields = [
        "title",
        "url",
        "status",
        "send_state",
        "send_at",
        "correction_notes",
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

    class Media:
        css = AdminStyles.Media.css
        js = ["subscriptions/countdown.js"]

    def get_queryset(self, request):
        return super().get_queryset(request).with_progress()

    def has_add_permission(self, request):
        return False  # Mailings are made by publishing a post.

    def get_list_display(self, request):
        if request.user.has_perm(CANCEL_PERMISSION):
            return self.list_display
        return [
            name if name != "status_and_when" else "status_and_when_only"
            for name in self.list_display
        ]

    def get_readonly_fields(self, request, obj=None):
        if request.user.has_perm(CANCEL_PERMISSION):
            return self.readonly_fields
        return [f if f != "send_state" else "send_state_only" for f in self.readonly_fields]

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj)

    @admin.display(description="Status", ordering="status")
    def status_and_when(self, mailing, cancel=True):
        """The status, and when it goes ("sending in 3:41 — Cancel") or went."""
        if mailing.status == Mailing.Status.CANCELLED:
            return send_countdown(mailing)
        when = send_countdown(mailing, cancel=cancel) or _sent_when(mailing)
        if not when:
            return mailing.get_status_display()
        return format_html('{}<br><span class="help">{}</span>', mailing.get_status_display(), when)

    @admin.display(description="Status", ordering="status")
    def status_and_when_only(self, mailing):
        return self.status_and_when(mailing, cancel=False)

    @admin.display(description="When")
    def send_state(self, mailing):
        return send_countdown(mailing) or _sent_when(mailing)

    @admin.display(description="When")
    def send_state_only(self, mailing):
        return send_countdown(mailing, cancel=False) or _sent_when(mailing)

    @admin.display(description="Corrections")
    def correction_notes(self, mailing):
        notes = format_html_join(
            "",
            "<p>{}: {}</p>",
            ((f"{c.created_at:%-d %b %Y %H:%M}", c.text) for c in mailing.corrections.all()),
        )
        if mailing.status != Mailing.Status.DONE:
            return notes or "—"
        url = reverse("admin:subscriptions_mailing_correct", args=[mailing.pk])
        return format_html('{}<a class="button" href="{}">Send a correction</a>', notes, url)

    def get_urls(self):
        return [
            path(
                "<int:pk>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="subscriptions_mailing_cancel",
            ),
            path(
                "<int:pk>/correct/",
                self.admin_site.admin_view(self.correct_view),
                name="subscriptions_mailing_correct",
            ),
            *super().get_urls(),
        ]

    def cancel_view(self, request, pk):
        """POST only (CSRF-checked by the middleware), with the permission
        to change mailings: take back a mailing inside its undo window."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(CANCEL_PERMISSION):
            raise PermissionDenied
        mailing = get_object_or_404(Mailing, pk=pk)
        if delivery.cancel(mailing):
            self.message_user(
                request,
                f"Cancelled the email of “{mailing.title}”: nobody was mailed. "
                "The post itself stays published.",
                messages.SUCCESS,
            )
        else:
            mailing.refresh_from_db()
            self.message_user(
                request,
                f"Too late to cancel “{mailing.title}”: it is {mailing.get_status_display().lower()}. "
                "Pause it to stop what has not gone yet.",
                messages.WARNING,
            )
        return redirect(_back(request, reverse("admin:subscriptions_mailing_changelist")))

    def correct_view(self, request, pk):
        """Send a correction: write it, preview it, then send it (the send
        button comes only with a preview of that very text)."""
        if not request.user.has_perm(CORRECT_PERMISSION):
            raise PermissionDenied
        mailing = get_object_or_404(Mailing, pk=pk)
        change_url = reverse("admin:subscriptions_mailing_change", args=[mailing.pk])
        if mailing.status != Mailing.Status.DONE:
            self.message_user(
                request, "Only a mailing that has gone out can be corrected.", messages.ERROR
            )
            return redirect(change_url)
        form = CorrectionForm(request.POST or None)
        preview = None
        signer = signing.Signer(salt="subscriptions.correction-preview")
        if request.method == "POST" and form.is_valid():
            text = form.cleaned_data["text"]
            if "send" in request.POST and _previewed(signer, request.POST.get("previewed"), text):
                try:
                    correction, created = delivery.correct(mailing, text, request.user)
                except delivery.CorrectionRefused as e:
                    self.message_user(request, str(e), messages.ERROR)
                    return redirect(change_url)
                self.message_user(
                    request,
                    "Correction queued for every reader who got the post and is still subscribed."
                    if created
                    else "This correction was sent already; it was not sent again.",
                    messages.SUCCESS if created else messages.WARNING,
                )
                return redirect(change_url)
            subject, text_part, html_part = emails.correction_preview(
                mailing, text, request.user.email
            )
            preview = {
                "subject": subject,
                "text": text_part,
                "html": html_part,
                "signature": signer.sign(text),
            }
        recipients = Correction(mailing=mailing, created_at=timezone.now()).recipients().count()
        return render(
            request,
            "admin/subscriptions/mailing/correct.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "original": mailing,
                "title": f"Send a correction: {mailing.title}",
                "form": form,
                "preview": preview,
                "recipients": recipients,
                "corrections": mailing.corrections.all(),
            },
            status=400 if form.errors else 200,
        )

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        response = _with_topic_labels(response, lambda mailing: mailing.topics)
        changelist = getattr(response, "context_data", None) and response.context_data.get("cl")
        if changelist is not None:  # one query for the page's rows with any pending
            waiting = _quota_waiting([m.pk for m in changelist.result_list if m.pending_count])
            for mailing in changelist.result_list:
                mailing.quota_waiting = waiting.get(mailing.pk, 0)
        return response

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
        if mailing.status in (Mailing.Status.QUEUED, Mailing.Status.CANCELLED):
            return "—"
        return progress_bar(mailing)

    @admin.display(description="Progress", ordering="pending_count")
    def progress_and_counts(self, mailing):
        if mailing.status in (Mailing.Status.QUEUED, Mailing.Status.CANCELLED):
            return "—"  # nothing sent, nor due to be yet
        waiting = getattr(mailing, "quota_waiting", 0)
        return format_html(
            '{}<br><span class="help">{} sent · {} failed · {} to send{}</span>{}',
            progress_bar(mailing),
            mailing.sent_count,
            mailing.failed_count,
            mailing.pending_count,
            f" · {waiting} waiting for tomorrow's quota" if waiting else "",
            held_note(mailing),
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
        waiting = mailing.pending_count and _quota_waiting([mailing.pk]).get(mailing.pk)
        if waiting:
            counts += f"; {waiting} waiting for tomorrow's quota (the daily cap is reached)"
        return format_html("{}{}", counts, held_note(mailing, explain=True))

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


def _sent_when(mailing):
    if mailing.finished_at and mailing.status == Mailing.Status.DONE:
        return format_html(
            '<time datetime="{}">sent {}</time>',
            mailing.finished_at.isoformat(),
            timezone.localtime(mailing.finished_at).strftime("%-d %b %H:%M"),
        )
    return ""


def _quota_waiting(mailing_ids):
    """{mailing id: deliveries waiting for the next day's quota}."""
    if not mailing_ids:
        return {}
    rows = (
        Delivery.objects.filter(
            mailing_id__in=mailing_ids, status=Delivery.Status.PENDING, error=QUOTA_WAIT
        )
        .values("mailing_id")
        .annotate(n=Count("pk"))
    )
    return {row["mailing_id"]: row["n"] for row in rows}


def held_note(mailing, explain=False):
    """What an editor must know of a held mailing: since when, and why
    (`explain`: and what that means, on the mailing's own page)."""
    if not mailing.held:
        return ""
    return format_html(
        '<br><strong class="held">Held since {}: {}</strong>{}',
        date_format(timezone.localtime(mailing.held_since), "j M, H:i"),
        mailing.held_reason,
        mark_safe(
            '<br><span class="help">A problem that is not any reader\'s: no attempt is '
            "spent, its readers are tried again every few minutes, and it goes on by "
            "itself once this is fixed.</span>"
        )
        if explain
        else "",
    )


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


@admin.register(Correction)
class CorrectionAdmin(admin.ModelAdmin):
    """Corrections sent, for the record; they are made from their mailing's
    "Send a correction" form."""

    list_display = ["mailing", "text", "status", "created_by", "created_at"]
    list_filter = ["status"]
    list_select_related = ["mailing"]
    fields = ["mailing", "text", "status", "created_by", "created_at", "finished_at", "subject"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


from . import stats_admin  # noqa: E402, F401  (the engagement pages)
