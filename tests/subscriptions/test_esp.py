"""An email provider's webhooks, through django-anymail's real views. The
provider's HTTP call is the one thing mocked: we post what it would post."""

import base64
import json

import pytest

from subscriptions.models import Subscriber
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db

AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"hook:s3cret").decode()}


@pytest.fixture(autouse=True)
def _webhook_secret(mount):
    mount(WEBHOOK_SECRET="hook:s3cret")


def postmark(client, auth=AUTH, **event):
    return client.post(
        "/anymail/postmark/tracking/", json.dumps(event), content_type="application/json", **auth
    )


@pytest.mark.parametrize(
    "event",
    [
        {"RecordType": "Bounce", "Type": "HardBounce", "Email": "Reader@Example.com", "ID": 1},
        {
            "RecordType": "SpamComplaint",
            "Type": "SpamComplaint",
            "Email": "reader@example.com",
            "ID": 2,
        },
    ],
)
def test_a_bounce_or_complaint_suppresses_the_address(client, event):
    reader = make_subscriber("Reader@example.com")
    other = make_subscriber("other@example.com")
    assert postmark(client, **event).status_code == 200
    reader.refresh_from_db()
    other.refresh_from_db()
    assert reader.status == Subscriber.Status.SUPPRESSED
    assert other.status == Subscriber.Status.CONFIRMED


def test_a_delivery_event_changes_nothing(client):
    reader = make_subscriber("reader@example.com")
    assert (
        postmark(client, RecordType="Delivery", Recipient="reader@example.com").status_code == 200
    )
    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.CONFIRMED


def test_a_webhook_without_the_secret_is_refused_and_changes_nothing(client):
    reader = make_subscriber("reader@example.com")
    response = postmark(
        client, auth={}, RecordType="Bounce", Type="HardBounce", Email="reader@example.com"
    )
    assert response.status_code in (400, 401, 403)
    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.CONFIRMED


def test_posts_go_through_a_providers_api_as_whole_messages(
    settings, provider, django_capture_on_commit_callbacks
):
    """Through the real django-anymail Mailgun backend, to a local stand-in
    for Mailgun's API: one call per reader, with the reader's own links and
    list headers."""
    from urllib.parse import urlsplit

    from django.urls import resolve

    from subscriptions import delivery
    from subscriptions.models import MAX_ID
    from tests.providers import anymail_settings
    from tests.subscriptions.test_delivery import Post

    settings.EMAIL_BACKEND, settings.ANYMAIL = anymail_settings(provider, "mailgun")
    reader = make_subscriber("reader@example.com", name="Ann")
    mailing, _ = delivery.announce(Post(title="Through the API"))
    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    ((name, recipients, fields),) = provider.accepted
    assert (name, recipients) == ("mailgun", ["reader@example.com"])
    assert fields["to"] == ["Ann <reader@example.com>"]
    assert fields["subject"] == ["Through the API"]
    assert fields["h:List-Unsubscribe-Post"] == ["List-Unsubscribe=One-Click"]
    (one_click,) = fields["h:List-Unsubscribe"]
    # The link is the reader's (tokens carry the second they were signed in).
    match = resolve(urlsplit(one_click.strip("<>")).path)
    assert match.url_name == "one_click"
    assert Subscriber.from_token(match.kwargs["token"], Subscriber.UNSUBSCRIBE) == reader
    (text,), (html,) = fields["text"], fields["html"]
    assert reader.preferences_url().rsplit("/", 2)[0] in text
    assert "QZXPLACEHOLDER" not in text + html
