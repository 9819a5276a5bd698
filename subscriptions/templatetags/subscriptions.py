from django import template

from ..forms import FormKind, wording

register = template.Library()


@register.inclusion_tag("subscriptions/subscribe_form.html", takes_context=True)
def subscribe_form(context, topic="", label=""):
    """The subscribe form: `{% subscribe_form %}` for everything the site
    publishes, `{% subscribe_form topic=slug label=name %}` to follow one topic.

    The wording comes from forms.wording(), which the consent record uses too.
    """
    request = context.get("request")
    kind = FormKind.TOPIC if topic else FormKind.FOOTER
    heading, text = wording(kind, [label or topic])
    return {
        "kind": kind,
        "heading": heading,
        "text": text,
        "topic": topic,
        # The path only: the page is cached whole for every visitor, so one
        # reader's query string must not become everyone's consent record.
        "source": request.path if request else "",
        "csrf_token": context.get("csrf_token"),
    }
