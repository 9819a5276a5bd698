import html
import re

from django import template
from django.utils.html import strip_tags

from ..forms import FormKind, wording

register = template.Library()


@register.inclusion_tag("subscriptions/corrections.html")
def post_corrections(post):
    """The corrections sent for `post`, as a note for its page:
    `{% post_corrections article %}` (nothing when there are none)."""
    from .. import corrections_for

    return {"corrections": corrections_for(post)}


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


_BLOCK_END = re.compile(
    r"</(p|h\d|li|blockquote|figure|figcaption|tr|table|ul|ol|div)>|<br\s*/?>", re.I
)
_LINK = re.compile(r'<a\s[^>]*href="([^"]+)"[^>]*>(.*?)</a>', re.I | re.S)


@register.filter
def email_text(value):
    """Sanitised HTML (a post's body) as plain text for the text part of an
    email: paragraphs kept, every link written out after its words."""

    def link(match):
        url, label = match[1], strip_tags(match[2]).strip()
        return f"{label} ({url})" if label and label != url else url

    text = _LINK.sub(link, str(value))
    text = html.unescape(strip_tags(_BLOCK_END.sub("\n\n", text)))
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paragraphs if p)
