"""Double opt-in end to end, through a real Celery worker and SMTP server."""

import json
import re
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.urls import reverse

from subscriptions.models import Subscriber
from tests.factories import make_subscriber

Status = Subscriber.Status

# Every test here runs tasks in the worker: committed data (transactional_db).
pytestmark = pytest.mark.usefixtures("celery_worker")


def subscribe(client, email, ip="10.0.0.1", **data):
    return client.post("/subscribe/", {"email": email, **data}, REMOTE_ADDR=ip)


def link_in(message, pattern):
    text = message.get_body(("plain",)).get_content()
    match = re.search(rf"{re.escape(settings.SITE_URL)}(/subscribe/{pattern}/[^/\s]+/)", text)
    assert match, text
    return match.group(1)


def test_it_sends_one_confirmation_then_a_welcome(client, smtp_server, celery_worker):
    assert subscribe(client, "ann@example.com").status_code == 200
    [confirmation] = smtp_server.wait_for(1)
    assert confirmation.envelope_recipients == ["ann@example.com"]
    assert confirmation["To"] == "ann@example.com"
    assert confirmation["From"] == settings.DEFAULT_FROM_EMAIL
    assert confirmation["Subject"] == "Confirm your subscription to Newsroom"
    assert confirmation.get_content_type() == "multipart/alternative"
    html = confirmation.get_body(("html",)).get_content()
    # Inlined: many mail clients drop <style>. Only the dark-mode and narrow
    # screen rules stay in one, since they cannot be inlined.
    kept = re.findall(r"<style[^>]*>(.*?)</style>", html, re.S)
    assert len(kept) == 1 and "prefers-color-scheme: dark" in kept[0]
    assert not re.sub(
        r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}|/\*.*?\*/", "", kept[0], flags=re.S
    ).strip()
    assert re.search(r'<a class="button" href="[^"]+" style="[^"]*background', html)
    assert f'href="{settings.SITE_URL}/subscribe/confirm/' in html

    path = link_in(confirmation, "confirm")
    assert client.get(path).status_code == 200
    assert Subscriber.objects.get().status == Status.PENDING  # GET changed nothing.
    response = client.post(path)
    assert b"Welcome to Newsroom" in response.content
    assert Subscriber.objects.get().status == Status.CONFIRMED

    welcome = smtp_server.wait_for(2)[1]
    assert welcome["Subject"] == "Welcome to Newsroom"
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    one_click = re.fullmatch(r"<(\S+)>", welcome["List-Unsubscribe"].strip()).group(1)
    assert one_click.startswith(f"{settings.SITE_URL}/subscribe/one-click/")
    assert link_in(welcome, "preferences")

    # The header's link works as RFC 8058 says.
    response = client.post(urlsplit(one_click).path, {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert Subscriber.objects.get().status == Status.UNSUBSCRIBED

    client.post(path)  # A second press, after leaving, sends nothing more.
    celery_worker.drain()
    assert len(smtp_server.messages) == 2


def test_addresses_that_need_no_confirmation_get_no_email(client, smtp_server, celery_worker):
    make_subscriber("confirmed@example.com")
    make_subscriber("bounced@example.com", status=Status.SUPPRESSED)
    subscribe(client, "confirmed@example.com")
    subscribe(client, "bounced@example.com")
    subscribe(client, "bot@example.com", website="spam")
    celery_worker.drain()
    assert smtp_server.messages == []


def test_fifty_addresses_from_one_ip_send_at_most_the_limit(
    client, smtp_server, celery_worker, settings
):
    settings.SUBSCRIPTIONS_RATELIMIT_IP = "10/h"
    statuses = [subscribe(client, f"reader{i}@example.com").status_code for i in range(50)]
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    celery_worker.drain()
    assert len(smtp_server.messages) == 10
    assert len({m["To"] for m in smtp_server.messages}) == 10


def test_twenty_posts_for_one_address_send_one_confirmation(
    client, smtp_server, celery_worker, settings
):
    settings.SUBSCRIPTIONS_RATELIMIT_EMAIL = "5/h"
    statuses = {
        subscribe(client, "ann@example.com", ip=f"10.0.2.{i}").status_code for i in range(20)
    }
    assert statuses == {200}
    celery_worker.drain()
    assert [m["To"] for m in smtp_server.messages] == ["ann@example.com"]


def test_an_import_without_consent_asks_each_new_address(tmp_path, smtp_server, celery_worker):
    from django.core.management import call_command

    make_subscriber("left@example.com", status=Status.UNSUBSCRIBED)
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,name\nann@example.com,Ann\nbob@example.com,\nleft@example.com,\n")
    call_command("import_subscribers", str(csv_file))
    smtp_server.wait_for(2)
    celery_worker.drain()
    assert sorted(m["To"] for m in smtp_server.messages) == ["ann@example.com", "bob@example.com"]
    assert Subscriber.objects.get(email="left@example.com").status == Status.UNSUBSCRIBED


def test_the_data_link_is_emailed_to_the_address_and_opens_download_and_erasure(
    client, smtp_server, celery_worker
):
    reader = make_subscriber("ann@example.com", name="Ann")
    make_subscriber("other@example.com")
    preferences = reader.preferences_path()
    page = client.get(preferences).content.decode()
    (action,) = re.findall(r'<form method="post" action="([^"]*/data/)"', page)
    response = client.post(action)
    assert response.status_code == 200
    assert b"Check your inbox" in response.content

    [message] = smtp_server.wait_for(1)
    assert message.envelope_recipients == ["ann@example.com"]
    assert message["Subject"] == "Your data at Newsroom"
    path = link_in(message, "data")
    assert f'href="{settings.SITE_URL}{path}"' in message.get_body(("html",)).get_content()

    download = client.get(f"{path}data.json")
    assert download.status_code == 200
    assert json.loads(download.content)["email"] == "ann@example.com"
    assert Subscriber.objects.filter(pk=reader.pk).exists()  # GET erased nothing.
    assert b"Your data is deleted" in client.post(path).content
    assert not Subscriber.objects.filter(pk=reader.pk).exists()
    celery_worker.drain()
    assert len(smtp_server.messages) == 1  # Nobody else was mailed.


def test_data_links_are_rate_limited_per_address(client, smtp_server, celery_worker, settings):
    settings.SUBSCRIPTIONS_RATELIMIT_EMAIL = "2/h"
    reader = make_subscriber("ann@example.com")
    action = reverse("subscriptions:data_link", args=[reader.make_token(Subscriber.PREFERENCES)])
    for _ in range(4):
        assert client.post(action).status_code == 200
    smtp_server.wait_for(2)
    celery_worker.drain()
    assert len(smtp_server.messages) == 2


@pytest.mark.django_db(transaction=False)
def test_a_digest_groups_its_posts_by_what_the_reader_follows(
    smtp_server, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from subscriptions import delivery
    from subscriptions.models import MAX_ID, Digest
    from tests.subscriptions.test_delivery import Post

    follower = make_subscriber(
        "follower@example.com", frequency="daily", topics=["jeff-sessions", "el-paso"]
    )
    everything = make_subscriber("everything@example.com", frequency="daily")
    for title, topics in (
        ("Border visit", ["el-paso"]),
        ("Senate hearing", ["jeff-sessions"]),
        ("Sessions in El Paso", ["el-paso", "jeff-sessions"]),
    ):
        mailing, _ = delivery.announce(Post(title=title, topics=topics))
        with django_capture_on_commit_callbacks(execute=False):
            delivery.fan_out(mailing.pk)
    with time_machine.travel(timezone.now() + timedelta(days=1, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()
            delivery.send_digest_batch(0, MAX_ID)
    by_reader = {m.envelope_recipients[0]: m for m in smtp_server.wait_for(2)}

    def order(text, *needles):
        return [text.casefold().index(needle.casefold()) for needle in needles]

    followed = by_reader[follower.email]
    for body in (
        followed.get_body(("plain",)).get_content(),
        followed.get_body(("html",)).get_content(),
    ):
        # Under each followed topic, alphabetically; a post about both, once.
        positions = order(
            body,
            "El Paso",
            "Border visit",
            "Sessions in El Paso",
            "Jeff Sessions",
            "Senate hearing",
        )
        assert positions == sorted(positions)
        assert body.count("Sessions in El Paso") == 1
    flat = by_reader[everything.email].get_body(("plain",)).get_content()
    assert "Border visit" in flat and "EL PASO" not in flat  # no group headings


def test_message_ids_are_the_salted_hmac_of_kind_and_reader(settings):
    """message_id() derives its HMAC key once per SECRET_KEY: its ids are still
    salted_hmac's (resent messages keep their Message-ID across the change),
    and a new SECRET_KEY makes new ones."""
    from django.utils.crypto import salted_hmac

    from subscriptions.emails import message_id, message_ids

    def slow(kind, pk):
        digest = salted_hmac("subscriptions.message-id", f"{kind}:{pk}").hexdigest()
        return f"{kind}.{digest[:24]}@list.example.com"

    for kind, pk in [("m1", 1), ("m1", 2), ("m77", 123456), ("d", 9), ("c3", 0)]:
        assert message_id(kind, pk, "list.example.com") == slow(kind, pk)
        # A batch's ids, made by one function for all its readers: the same.
        assert message_ids(kind, "list.example.com")(pk) == slow(kind, pk)
    before = message_id("m1", 1, "list.example.com")
    settings.SECRET_KEY = "another secret"
    assert message_id("m1", 1, "list.example.com") == slow("m1", 1) != before
