from django import template
from django.conf import settings

register = template.Library()


@register.inclusion_tag("subscriptions/subscribe_form.html", takes_context=True)
def subscribe_form(context, topic="", label=""):
    """The subscribe form: `{% subscribe_form %}` for everything the site
    publishes, `{% subscribe_form topic=slug label=name %}` to follow one topic."""
    request = context.get("request")
    return {
        "site_name": settings.SITE_NAME,
        "topic": topic,
        "label": label,
        "source": request.get_full_path() if request else "",
        "csrf_token": context.get("csrf_token"),
    }
