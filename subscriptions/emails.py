"""Every email the app sends, built from templates: for each kind a subject,
a plain-text body and an HTML body (CSS inlined with css-inline, since many
mail clients drop <style>). Templates live under subscriptions/emails/ and a
site overrides them from its own templates directory.
"""

import css_inline
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from .conf import conf


def _one_line(text):
    # Subjects come from templates; newlines in one must never become a
    # header break.
    return " ".join(text.split())


def build(kind, to, context, headers=None):
    """The EmailMultiAlternatives for subscriptions/emails/<kind>-*."""
    context = {"site_name": conf.site_name, "site_url": conf.site_url, **context}
    prefix = f"subscriptions/emails/{kind}"
    subject = _one_line(render_to_string(f"{prefix}-subject.txt", context))
    text = render_to_string(f"{prefix}-body.txt", context)
    html = css_inline.inline(render_to_string(f"{prefix}-body.html", context))
    # The bare address only: names never go into headers.
    message = EmailMultiAlternatives(subject, text, conf.from_email, [to], headers=headers)
    message.attach_alternative(html, "text/html")
    return message


def list_unsubscribe_headers(subscriber):
    """RFC 2369 and RFC 8058 one-click unsubscribe."""
    return {
        "List-Unsubscribe": f"<{subscriber.one_click_url()}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def confirmation(subscriber):
    # Carries nothing the form's sender typed but the address itself, so it
    # cannot be used to mail chosen words to a stranger.
    build(
        "confirmation",
        subscriber.email,
        {"confirm_url": subscriber.confirm_url(), "max_age_days": conf.confirm_max_age.days},
    ).send()


def welcome(subscriber):
    build(
        "welcome",
        subscriber.email,
        {
            "subscriber": subscriber,
            "preferences_url": subscriber.preferences_url(),
            "unsubscribe_url": subscriber.unsubscribe_url(),
        },
        headers=list_unsubscribe_headers(subscriber),
    ).send()
