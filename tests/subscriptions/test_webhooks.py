"""An email provider's webhooks cannot be forged: django-anymail's real views,
mounted by the site's real URLconf, posted what a stranger would post.

The URLconf reads the settings when it loads, so each test loads it again
under the settings it sets (the `mount` fixture, tests/subscriptions/conftest.py).
"""

import base64
import hashlib
import hmac
import json
import time

import pytest
from django.core.management import call_command
from django.urls import get_resolver

from subscriptions import checks
from subscriptions.models import Subscriber
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db

SECRET = "hook:s3cret"
AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(SECRET.encode()).decode()}
WRONG_AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"hook:guess").decode()}
MAILGUN_KEY = "mailgun-signing-key"

# A hard bounce for a real reader, as Postmark words it; every other
# provider must refuse it before reading it, so its format does not matter.
FORGED = {"RecordType": "Bounce", "Type": "HardBounce", "Email": "reader@example.com", "ID": 1}


def every_tracking_path():
    from anymail import urls

    return sorted(
        f"/anymail/{p.pattern}"
        for p in urls.urlpatterns
        if p.name.endswith("_tracking_webhook") or p.name == "mandrill_webhook"
    )


def mounted_paths():
    """The provider webhook paths the site's URLconf serves now."""
    resolver = get_resolver()
    return sorted(
        f"/anymail/{p.pattern}"
        for entry in resolver.url_patterns
        if str(entry.pattern) == "anymail/"
        for p in entry.url_patterns
    )


def post(client, path, body=FORGED, **extra):
    return client.post(path, json.dumps(body), content_type="application/json", **extra)


def status_of(subscriber):
    subscriber.refresh_from_db()
    return subscriber.status


def mailgun_event(recipient, key=MAILGUN_KEY, token="a" * 50):
    timestamp = str(int(time.time()))
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": {
            "event": "failed",
            "severity": "permanent",
            "recipient": recipient,
            "timestamp": time.time(),
        },
    }


def test_without_a_secret_no_webhook_is_mounted_and_forged_bounces_change_nothing(mount, client):
    reader = make_subscriber("reader@example.com")
    mount()
    paths = every_tracking_path()
    assert "/anymail/postmark/tracking/" in paths and len(paths) > 10
    answers = {
        path: (post(client, path).status_code, post(client, path, **AUTH).status_code)
        for path in paths
    }
    assert status_of(reader) == Subscriber.Status.CONFIRMED
    assert answers == {path: (404, 404) for path in paths}
    assert mounted_paths() == []


def test_with_a_secret_a_request_without_it_changes_nothing(mount, client):
    reader = make_subscriber("reader@example.com")
    mount(WEBHOOK_SECRET=SECRET)
    paths = mounted_paths()
    assert "/anymail/postmark/tracking/" in paths
    # Providers that need their own key to verify a request are not mounted
    # without it (they would answer every POST with a 500).
    assert "/anymail/mailgun/tracking/" not in paths
    assert "/anymail/mandrill/" not in paths
    for path in paths:
        for auth in ({}, WRONG_AUTH):
            response = post(client, path, **auth)
            assert response.status_code in (400, 401, 403), (path, response.status_code)
    assert status_of(reader) == Subscriber.Status.CONFIRMED


def test_a_signing_provider_refuses_a_bad_signature(mount, client):
    reader = make_subscriber("reader@example.com")
    mount(MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_KEY)
    # The signature alone authenticates Mailgun: only its webhook is mounted.
    assert mounted_paths() == ["/anymail/mailgun/tracking/"]
    path = "/anymail/mailgun/tracking/"
    for body in (
        FORGED,
        mailgun_event("reader@example.com", key="a-guess"),
        {**mailgun_event("reader@example.com"), "signature": {"timestamp": "1", "token": "t"}},
    ):
        assert post(client, path, body).status_code == 400
    assert status_of(reader) == Subscriber.Status.CONFIRMED

    # With a secret too, Mailgun needs both.
    mount(WEBHOOK_SECRET=SECRET, MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_KEY)
    assert post(client, path, mailgun_event("reader@example.com")).status_code == 400
    assert (
        post(client, path, mailgun_event("reader@example.com", key="x"), **AUTH).status_code == 400
    )
    assert status_of(reader) == Subscriber.Status.CONFIRMED


def test_an_authenticated_bounce_suppresses(mount, client):
    reader = make_subscriber("reader@example.com")
    signed = make_subscriber("signed@example.com")
    other = make_subscriber("other@example.com")
    mount(WEBHOOK_SECRET=SECRET, MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_KEY)
    assert post(client, "/anymail/postmark/tracking/", **AUTH).status_code == 200
    response = post(
        client, "/anymail/mailgun/tracking/", mailgun_event("signed@example.com"), **AUTH
    )
    assert response.status_code == 200
    assert status_of(reader) == Subscriber.Status.SUPPRESSED
    assert status_of(signed) == Subscriber.Status.SUPPRESSED
    assert status_of(other) == Subscriber.Status.CONFIRMED


class TestStartUpCheck:
    def test_a_provider_backend_without_a_secret_is_reported(self, settings):
        settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "token"}
        (warning,) = checks.webhook_secret(None)
        assert warning.id == "subscriptions.W001"
        assert "postmark" in warning.msg and "NEVER suppress" in warning.msg
        assert "ANYMAIL_WEBHOOK_SECRET" in warning.hint

    def test_manage_py_check_says_so(self, settings, capsys):
        settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
        settings.ANYMAIL = {}
        call_command("check")
        assert "subscriptions.W001" in capsys.readouterr().err

    @pytest.mark.parametrize(
        "backend, anymail",
        [
            ("anymail.backends.postmark.EmailBackend", {"WEBHOOK_SECRET": SECRET}),
            ("anymail.backends.mailgun.EmailBackend", {"MAILGUN_WEBHOOK_SIGNING_KEY": "k"}),
            ("anymail.backends.brevo.EmailBackend", {"WEBHOOK_SECRET": SECRET}),
            ("django.core.mail.backends.smtp.EmailBackend", {}),
            ("anymail.backends.test.EmailBackend", {}),
        ],
    )
    def test_nothing_is_reported_when_secured_or_not_a_provider(self, settings, backend, anymail):
        settings.EMAIL_BACKEND = backend
        settings.ANYMAIL = anymail
        assert checks.webhook_secret(None) == []
