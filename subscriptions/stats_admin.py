"""The admin's engagement pages (stats.py computes, these show): a list of
mailings with what happened to each, and one page per mailing with its top
links and a chart of its first 48 hours. Each takes a constant number of
queries, whatever the number of mailings, links or events."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Min
from django.template.response import TemplateResponse

from . import stats
from .conf import conf
from .models import Delivery, Engagement, StatKind

COLUMNS = [
    ("delivered", "Delivered"),
    (StatKind.OPEN.value, "People's opens"),
    (StatKind.OPEN_MACHINE.value, "Machines' opens"),
    (StatKind.OPEN_MPP.value, "Apple MPP"),
    (StatKind.CLICK.value, "People's clicks"),
    (StatKind.CLICK_MACHINE.value, "Machines' clicks"),
    ("unsubscribed", "Unsubscribes"),
]
# The list's headers, short enough for seven numbers beside a title.
SHORT = {
    StatKind.OPEN.value: "Opens",
    StatKind.OPEN_MACHINE.value: "Machine opens",
    StatKind.OPEN_MPP.value: "MPP",
    StatKind.CLICK.value: "Clicks",
    StatKind.CLICK_MACHINE.value: "Machine clicks",
    "unsubscribed": "Unsubs",
}


def _column(key, label):
    """A list column showing one of the row's stats (set by changelist_view)."""

    @admin.display(description=label)
    def show(mailing):
        return getattr(mailing, "stats", {}).get(key, 0)

    show.__name__ = f"stat_{key.replace('-', '_')}"  # The cell's class: field-stat_…
    return show


@admin.register(Engagement)
class EngagementAdmin(admin.ModelAdmin):
    list_display = ["title", *[_column(key, SHORT.get(key, label)) for key, label in COLUMNS]]
    search_fields = ["title"]
    list_per_page = 50
    show_full_result_count = False

    class Media:
        css = {"all": ["subscriptions/admin.css"]}

    # Who may see a mailing may see its stats; nobody changes them here.
    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("subscriptions.view_mailing")

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).defer("text", "html", "summary")

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            "title": "Engagement of each mailing",
            **(extra_context or {}),
        }
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", None) and response.context_data.get("cl")
        if changelist is not None:
            rows = changelist.result_list = list(changelist.result_list)
            found = stats.summaries(rows)
            for row in rows:
                row.stats = found[row.pk]
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        mailing = self.get_object(request, object_id)
        if mailing is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        summary = stats.summaries([mailing])[mailing.pk]
        first_sent = Delivery.objects.filter(mailing=mailing).aggregate(at=Min("sent_at"))["at"]
        start = first_sent or mailing.created_at
        rows = [(label, summary[key]) for key, label in COLUMNS]
        if conf.STATS_PER_READER:
            rows += [
                ("Readers who opened (individually counted)", summary["readers-open"]),
                ("Readers who clicked (individually counted)", summary["readers-click"]),
            ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Engagement: {mailing.title}",
            "mailing": mailing,
            "rows": rows,
            "rates": _rates(summary),
            "top_links": stats.top_links(mailing),
            "chart": stats.mailing_chart(mailing, start),
            "machine_seconds": conf.STATS_MACHINE_SECONDS,
            "start": start,
            "stats_on": conf.STATS,
            "per_reader": conf.STATS_PER_READER,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/subscriptions/engagement/stats.html", context)


def _rates(summary):
    """People's opens and clicks per delivered email, as percentages (opens
    count every open, so a reader who opens twice counts twice)."""
    delivered = summary["delivered"]
    if not delivered:
        return None
    return {
        "opens": round(100 * summary[StatKind.OPEN] / delivered, 1),
        "clicks": round(100 * summary[StatKind.CLICK] / delivered, 1),
    }
