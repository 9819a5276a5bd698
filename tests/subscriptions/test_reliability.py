"""What a live site meets after launch (issue 9): each test here failed on
the code before its fix."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from subscriptions import delivery
from subscriptions.models import MAX_ID, Digest, Subscriber
from tests.factories import make_subscriber
from tests.subscriptions.test_delivery import Post

S = Subscriber.Status
F = Subscriber.Frequency
TRICKY = 'Q&A: Tom\'s "best" <picks> — Ñandú'


# Email text is not HTML-escaped.


@pytest.mark.django_db
def test_subjects_and_text_parts_show_titles_and_names_as_written(
    smtp_server, settings, django_capture_on_commit_callbacks
):
    settings.SITE_NAME = "Ann & Bob's <Gazette> “Ñ”"
    instant = make_subscriber("instant@example.com")
    make_subscriber("daily@example.com", frequency=F.DAILY)
    pending = make_subscriber("pending@example.com", status=S.PENDING)

    mailing, _ = delivery.announce(Post(title=TRICKY, summary="Fish & chips <3"))
    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    with time_machine.travel(timezone.now() + timedelta(days=1, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()
            delivery.send_digest_batch(0, MAX_ID)
    delivery.send_confirmation(pending.pk)
    instant.refresh_from_db()
    delivery.send_welcome(instant.pk)

    by_kind = {}
    for message in smtp_server.wait_for(4):
        (rcpt,) = message.envelope_recipients
        kind = {"instant@example.com": "post", "daily@example.com": "digest"}.get(rcpt)
        if rcpt == "pending@example.com":
            kind = "confirmation"
        if rcpt == "instant@example.com" and "Welcome" in message["Subject"]:
            kind = "welcome"
        by_kind[kind] = message
    assert set(by_kind) == {"post", "digest", "confirmation", "welcome"}
    assert by_kind["post"]["Subject"] == TRICKY
    for kind, message in by_kind.items():
        subject = str(message["Subject"])
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        for shown in (subject, text):
            assert "&amp;" not in shown and "&#x27;" not in shown and "&lt;" not in shown, kind
            assert "&quot;" not in shown and "&gt;" not in shown, kind
        assert settings.SITE_NAME in subject + text, kind
        assert "<Gazette>" not in html, kind  # the HTML part stays escaped
        if kind in ("post", "digest"):
            assert TRICKY in text, kind
            assert "Fish & chips <3" in text, kind
            assert "<picks>" not in html and "&lt;picks&gt;" in html, kind
