from django import template

from ..admin import held_note, progress_bar
from ..models import Mailing, Subscriber

register = template.Library()


@register.inclusion_tag("subscriptions/admin/dashboard.html")
def subscriptions_dashboard(count=5):
    """Subscribers by status and the progress of the latest mailings, for
    the admin's index page: `{% load subscriptions_admin %}{% subscriptions_dashboard %}`.
    Two queries."""
    counts = Subscriber.objects.counts_by_status()
    mailings = Mailing.objects.with_progress().order_by("-created_at", "-pk")[:count]
    return {
        "counts": [(status.label, counts[status], status.value) for status in Subscriber.Status],
        "mailings": [(m, progress_bar(m), held_note(m)) for m in mailings],
    }
