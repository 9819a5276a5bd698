"""The undo window and scheduled sends (issue 11, item 1): a mailing waits
SUBSCRIPTIONS_SEND_DELAY seconds, or until its send time, before anyone is
mailed; until then an editor can cancel it."""

from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

import subscriptions
from subscriptions import delivery
from subscriptions.models import MAX_ID, Delivery, Mailing
from tests.factories import make_staff, make_subscriber
from tests.subscriptions.test_delivery import Post, readers, received, wait_for_done, worker
from tests.support import wait_until


def _run(capture, *calls):
    """Run delivery functions here, keeping the tasks they queue unsent."""
    with capture(execute=False) as queued:
        for call in calls:
            call()
    return queued


# In a worker: cancel inside the window, or let it pass.


@worker
def test_a_cancelled_mailing_mails_nobody_and_one_left_alone_mails_everyone_once(
    celery_worker, smtp_server, settings
):
    settings.SUBSCRIPTIONS_SEND_DELAY = 1.5
    group = readers(30)
    kept = subscriptions.announce(Post(title="Kept"))
    taken_back = subscriptions.announce(Post(title="Taken back"))
    assert taken_back.status == kept.status == Mailing.Status.QUEUED
    assert delivery.cancel(taken_back)

    # Both fan-out tasks wait for the same moment: once the kept one is
    # done, the cancelled one's task has run too, and found nothing to do.
    wait_for_done(kept)
    wait_until(lambda: timezone.now() > taken_back.send_at + timedelta(seconds=1))
    celery_worker.drain()

    assert received(smtp_server) == Counter({r.email: 1 for r in group})
    assert {m["Subject"] for m in smtp_server.messages} == {"Kept"}
    # Nobody was mailed before the window closed.
    assert min(m.received_at for m in smtp_server.messages) >= kept.send_at.timestamp()
    taken_back.refresh_from_db()
    assert taken_back.status == Mailing.Status.CANCELLED
    assert not Delivery.objects.filter(mailing=taken_back).exists()
    assert delivery.sweep() == []  # nothing for the sweeper to revive


# In this process, with the clock controlled.


@pytest.mark.django_db
def test_the_delay_holds_the_fan_out_until_the_window_has_passed(
    smtp_server, settings, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_SEND_DELAY = 60
    group = readers(3)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        mailing, _ = delivery.announce(Post())
    assert mailing.send_at == start + timedelta(seconds=60)
    with time_machine.travel(start + timedelta(seconds=59), tick=False):
        # Woken a second early: it waits again, for the send time.
        again = _run(django_capture_on_commit_callbacks, lambda: delivery.fan_out(mailing.pk))
        assert len(again) == 1
        assert mailing.seconds_to_send() == pytest.approx(1)
    assert not Delivery.objects.exists()
    with time_machine.travel(start + timedelta(seconds=60), tick=False):
        _run(
            django_capture_on_commit_callbacks,
            lambda: delivery.fan_out(mailing.pk),
            lambda: delivery.send_mailing_batch(mailing.pk, 0, MAX_ID),
        )
    assert received(smtp_server) == Counter({r.email: 1 for r in group})


@pytest.mark.django_db
def test_cancelling_wins_over_a_fan_out_that_has_not_started_and_loses_to_one_that_has(
    settings, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_SEND_DELAY = 0
    readers(2)
    cancelled = subscriptions.announce(Post())
    assert delivery.cancel(cancelled)
    assert not delivery.cancel(cancelled)  # once
    _run(django_capture_on_commit_callbacks, lambda: delivery.fan_out(cancelled.pk))
    cancelled.refresh_from_db()
    assert cancelled.status == Mailing.Status.CANCELLED and cancelled.finished_at
    assert not Delivery.objects.filter(mailing=cancelled).exists()

    started = subscriptions.announce(Post())
    _run(django_capture_on_commit_callbacks, lambda: delivery.fan_out(started.pk))
    assert not delivery.cancel(started)
    started.refresh_from_db()
    assert started.status == Mailing.Status.SENDING
    assert Delivery.objects.filter(mailing=started).count() == 2


@pytest.mark.django_db
def test_a_cancelled_post_is_never_announced_again(settings, django_capture_on_commit_callbacks):
    settings.SUBSCRIPTIONS_SEND_DELAY = 60
    post = Post()
    mailing = subscriptions.announce(post)
    delivery.cancel(mailing)
    again, created = delivery.announce(post)
    assert (again.pk, created, again.status) == (mailing.pk, False, Mailing.Status.CANCELLED)
    assert subscriptions.unannounced([post]) == []


@pytest.mark.django_db
def test_the_audience_is_the_readers_confirmed_when_the_post_went_live(
    smtp_server, settings, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_SEND_DELAY = 60
    before = make_subscriber("before@example.com", confirmed_at=timezone.now())
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        mailing, _ = delivery.announce(Post())
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        make_subscriber("during@example.com", confirmed_at=timezone.now())
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        _run(
            django_capture_on_commit_callbacks,
            lambda: delivery.fan_out(mailing.pk),
            lambda: delivery.send_mailing_batch(mailing.pk, 0, MAX_ID),
        )
    assert received(smtp_server) == Counter({before.email: 1})


@pytest.mark.django_db
def test_a_scheduled_send_goes_at_its_time_and_not_before(
    smtp_server, settings, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_SEND_DELAY = 60
    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 300
    group = readers(3)
    start = timezone.now()
    at = start + timedelta(hours=3)
    with time_machine.travel(start, tick=False):
        queued = _run(
            django_capture_on_commit_callbacks,
            lambda: delivery.announce(Post(), send_at=at),
        )
        # Hours ahead: no task waits in the broker that long.
        assert queued == []
    mailing = Mailing.objects.get()
    assert mailing.send_at == at
    for later in (timedelta(hours=1), timedelta(hours=2, minutes=54)):
        with time_machine.travel(start + later, tick=False):
            assert _run(django_capture_on_commit_callbacks, delivery.sweep) == []
            # A stray fan-out (a redelivered task) sends nothing early.
            _run(django_capture_on_commit_callbacks, lambda: delivery.fan_out(mailing.pk))
    assert not Delivery.objects.exists() and smtp_server.messages == []

    # Within the longest countdown: the sweeper queues its fan-out, once.
    with time_machine.travel(at - timedelta(minutes=4), tick=False):
        assert len(_run(django_capture_on_commit_callbacks, delivery.sweep)) == 1
        assert delivery.start_scheduled() == []
        _run(django_capture_on_commit_callbacks, lambda: delivery.fan_out(mailing.pk))
    assert not Delivery.objects.exists()
    with time_machine.travel(at, tick=False):
        _run(
            django_capture_on_commit_callbacks,
            lambda: delivery.fan_out(mailing.pk),
            lambda: delivery.send_mailing_batch(mailing.pk, 0, MAX_ID),
        )
    assert received(smtp_server) == Counter({r.email: 1 for r in group})


@pytest.mark.django_db
def test_a_send_time_earlier_than_the_window_still_waits_for_the_window(settings):
    settings.SUBSCRIPTIONS_SEND_DELAY = 60
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        mailing, _ = delivery.announce(Post(), send_at=start - timedelta(hours=1))
    assert mailing.send_at == start + timedelta(seconds=60)


@pytest.mark.django_db
def test_the_sweeper_starts_a_due_mailing_whose_task_was_lost(
    settings, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_SEND_DELAY = 120
    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 300
    readers(2)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        mailing = subscriptions.announce(Post())  # its countdown task is lost
    with time_machine.travel(start + timedelta(seconds=119), tick=False):
        assert _run(django_capture_on_commit_callbacks, delivery.sweep) == []
    # Once the send time is CLAIM_TIMEOUT past with no progress.
    with time_machine.travel(start + timedelta(seconds=120 + 301), tick=False):
        with django_capture_on_commit_callbacks(execute=False) as queued:
            assert delivery.sweep() == [mailing.pk]
    assert len(queued) == 2  # the fan-out and a batch


@pytest.mark.django_db
def test_the_delay_is_zero_allowed(settings, django_capture_on_commit_callbacks):
    settings.SUBSCRIPTIONS_SEND_DELAY = 0
    make_subscriber()
    with django_capture_on_commit_callbacks(execute=False) as queued:
        mailing = subscriptions.announce(Post())
    assert len(queued) == 1 and mailing.seconds_to_send() == 0
    _run(django_capture_on_commit_callbacks, lambda: delivery.fan_out(mailing.pk))
    assert Delivery.objects.filter(mailing=mailing).count() == 1


def test_the_send_delay_is_read_from_the_environment():
    from tests.newsroom.test_settings import load_settings

    assert load_settings("SUBSCRIPTIONS_SEND_DELAY") == {"SUBSCRIPTIONS_SEND_DELAY": 60}
    assert load_settings("SUBSCRIPTIONS_SEND_DELAY", SUBSCRIPTIONS_SEND_DELAY="0") == {
        "SUBSCRIPTIONS_SEND_DELAY": 0
    }
    assert load_settings("SUBSCRIPTIONS_SEND_DELAY", SUBSCRIPTIONS_SEND_DELAY="300") == {
        "SUBSCRIPTIONS_SEND_DELAY": 300
    }


# The admin: "sending in 1:00 — Cancel".


@pytest.fixture
def queued(settings):
    settings.SUBSCRIPTIONS_SEND_DELAY = 60
    make_subscriber()
    return subscriptions.announce(Post(title="Wrong story"))


def _cancel_url(mailing):
    return f"/admin/subscriptions/mailing/{mailing.pk}/cancel/"


@pytest.mark.django_db
def test_the_mailing_list_shows_the_countdown_and_a_cancel_button(client, queued):
    client.force_login(User.objects.create_superuser("chief", "chief@example.com", "pw-1234-x"))
    with time_machine.travel(queued.send_at - timedelta(minutes=3, seconds=41), tick=False):
        page = client.get("/admin/subscriptions/mailing/").content.decode()
    assert ">3:41</time> — <button" in page
    assert page.count("sending in <time") == 1
    assert f'formaction="{_cancel_url(queued)}"' in page
    assert "subscriptions/countdown.js" in page


@pytest.mark.django_db
def test_an_editor_cancels_by_post_and_the_mailing_shows_cancelled(queued):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_staff("editor", role="Editors"))
    page = client.get("/admin/subscriptions/mailing/")
    token = page.cookies["csrftoken"].value
    response = client.post(
        _cancel_url(queued),
        {"csrfmiddlewaretoken": token},
        HTTP_REFERER="http://testserver/admin/subscriptions/mailing/",
    )
    assert response.status_code == 302
    assert response["Location"] == "http://testserver/admin/subscriptions/mailing/"
    queued.refresh_from_db()
    assert queued.status == Mailing.Status.CANCELLED
    page = client.get("/admin/subscriptions/mailing/").content.decode()
    assert "Cancelled: nobody was mailed" in page
    # A second click says it is too late, and changes nothing.
    response = client.post(_cancel_url(queued), {"csrfmiddlewaretoken": token}, follow=True)
    assert "Too late to cancel" in response.content.decode()


@pytest.mark.django_db
def test_cancel_refuses_get_strangers_readers_without_permission_and_forged_posts(client, queued):
    assert client.post(_cancel_url(queued)).status_code == 302  # to the login page
    assert "/admin/login/" in client.post(_cancel_url(queued))["Location"]
    reader = User.objects.create_user("reader", "reader@example.com", "pw-1234-x")
    client.force_login(reader)  # not staff
    assert "/admin/login/" in client.post(_cancel_url(queued))["Location"]
    author = make_staff("author", role="Authors")  # staff, but may not cancel
    client.force_login(author)
    assert client.post(_cancel_url(queued)).status_code == 403
    assert "Cancel</button>" not in client.get("/admin/subscriptions/mailing/").content.decode()
    editor = make_staff("editor", role="Editors")
    client.force_login(editor)
    assert client.get(_cancel_url(queued)).status_code == 405
    forged = Client(enforce_csrf_checks=True)
    forged.force_login(editor)
    assert forged.post(_cancel_url(queued)).status_code == 403  # no CSRF token
    queued.refresh_from_db()
    assert queued.status == Mailing.Status.QUEUED


@pytest.mark.django_db
def test_the_mailing_list_with_waiting_mailings_takes_a_constant_number_of_queries(
    client, settings
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.SUBSCRIPTIONS_SEND_DELAY = 60
    client.force_login(User.objects.create_superuser("chief", "chief@example.com", "pw-1234-x"))
    counts = []
    for n in (1, 6):
        for _ in range(n):
            subscriptions.announce(Post())
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/admin/subscriptions/mailing/").status_code == 200
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]
