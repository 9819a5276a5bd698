"""Pending addresses: one reminder to confirm, then, after a while, deletion."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from subscriptions import delivery
from subscriptions.models import Delivery, Follow, Mailing, Subscriber
from tests.factories import make_subscriber

S = Subscriber.Status
DAY = timedelta(days=1)


@pytest.fixture
def start():
    """A fixed moment to travel from."""
    return timezone.now().replace(microsecond=0)


def pending(start, age=timedelta(0), email=None, **fields):
    """A pending address whose confirmation email went out `age` before `start`."""
    return make_subscriber(email, status=S.PENDING, confirmation_sent_at=start - age, **fields)


def remind(when, django_capture_on_commit_callbacks):
    """Run the reminder job at `when`; (count, tasks it queued)."""
    with time_machine.travel(when, tick=False):
        with django_capture_on_commit_callbacks(execute=False) as queued:
            count = delivery.remind_pending()
    return count, len(queued)


@pytest.mark.django_db
def test_a_pending_address_gets_one_reminder_after_the_configured_days(
    start, settings, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_REMIND_AFTER = timedelta(days=3)
    reader = pending(start)
    assert remind(start + 3 * DAY - timedelta(minutes=1), django_capture_on_commit_callbacks) == (
        0,
        0,
    )
    assert remind(start + 3 * DAY + timedelta(minutes=1), django_capture_on_commit_callbacks) == (
        1,
        1,
    )
    reader.refresh_from_db()
    assert reader.reminded_at == start + 3 * DAY + timedelta(minutes=1)
    for later in (3 * DAY + timedelta(hours=1), 4 * DAY, 5 * DAY + timedelta(hours=23)):
        assert remind(start + later, django_capture_on_commit_callbacks) == (0, 0)


@pytest.mark.django_db
def test_only_pending_addresses_in_the_window_are_reminded(
    start, settings, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_REMIND_AFTER = timedelta(days=3)
    due = pending(start, 4 * DAY)
    pending(start, 7 * DAY)  # a backlog from before: never mailed out of the blue
    pending(start, 4 * DAY, reminded_at=start - DAY)  # reminded already
    pending(start, DAY)  # too soon
    for status in (S.CONFIRMED, S.UNSUBSCRIBED, S.SUPPRESSED):
        make_subscriber(status=status, confirmation_sent_at=start - 4 * DAY)
    assert remind(start, django_capture_on_commit_callbacks) == (1, 1)
    assert list(Subscriber.objects.filter(reminded_at=start).values_list("pk", flat=True)) == [
        due.pk
    ]


@pytest.mark.django_db
def test_two_runs_at_once_remind_an_address_once(start):
    pending(start, 4 * DAY)
    first = Subscriber.objects.claim_reminders(start - 3 * DAY, start - 6 * DAY, 100)
    second = Subscriber.objects.claim_reminders(start - 3 * DAY, start - 6 * DAY, 100)
    assert len(first) == 1 and second == []


@pytest.mark.django_db
def test_no_reminders_when_turned_off(start, settings, django_capture_on_commit_callbacks):
    settings.SUBSCRIPTIONS_REMIND_AFTER = None
    pending(start, 4 * DAY)
    assert remind(start, django_capture_on_commit_callbacks) == (0, 0)
    assert not Subscriber.objects.filter(reminded_at__isnull=False).exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_reminder_arrives_once_and_its_link_confirms(
    client, smtp_server, celery_worker, settings
):
    settings.SUBSCRIPTIONS_REMIND_AFTER = timedelta(days=3)
    reader = pending(timezone.now(), 3 * DAY + timedelta(hours=1), "late@example.com")
    assert delivery.remind_pending() == 1
    assert delivery.remind_pending() == 0
    [message] = smtp_server.wait_for(1)
    celery_worker.drain()
    assert len(smtp_server.messages) == 1
    assert message.envelope_recipients == ["late@example.com"]
    assert message["Subject"] == "Reminder: confirm your subscription to Newsroom"
    text = message.get_body(("plain",)).get_content()
    assert "This is the only reminder." in text
    path = re.search(r"https?://[^/\s]+(/subscribe/confirm/[^/\s]+/)", text).group(1)
    client.post(path)
    reader.refresh_from_db()
    assert reader.status == S.CONFIRMED


@pytest.mark.django_db
def test_the_confirmation_email_says_one_reminder_will_follow(settings):
    from subscriptions import emails

    settings.SUBSCRIPTIONS_REMIND_AFTER = timedelta(days=3)
    reader = pending(timezone.now())

    def words(message):
        return " ".join(message.body.split()), " ".join(message.alternatives[0][0].split())

    for part in words(emails.confirmation(reader)):
        assert "we will remind you once in 3 days, then never write again" in part
    settings.SUBSCRIPTIONS_REMIND_AFTER = None
    for part in words(emails.confirmation(reader)):
        assert "remind" not in part and "you will not hear from us again" in part


@pytest.mark.django_db
def test_old_pending_addresses_are_deleted_and_nobody_else(start, settings, admin_user):
    settings.SUBSCRIPTIONS_PENDING_MAX_AGE = timedelta(days=30)
    old = pending(start, 31 * DAY, "old@example.com", topics=["el-paso"])
    reminded = pending(start, 40 * DAY, "reminded@example.com", reminded_at=start - 37 * DAY)
    recent = pending(start, 29 * DAY, "recent@example.com")
    kept = [
        make_subscriber(
            f"{status}@example.com",
            status=status,
            confirmation_sent_at=start - 400 * DAY,
        )
        for status in (S.CONFIRMED, S.UNSUBSCRIBED, S.SUPPRESSED)
    ]
    LogEntry.objects.create(
        user=admin_user,
        content_type=ContentType.objects.get_for_model(Subscriber),
        object_id=str(old.pk),
        object_repr=str(old),
        action_flag=CHANGE,
    )
    with time_machine.travel(start, tick=False):
        assert delivery.delete_stale_pending() == 2
    assert set(Subscriber.objects.values_list("email", flat=True)) == {
        recent.email,
        *(k.email for k in kept),
    }
    assert not Follow.objects.filter(subscriber_id=old.pk).exists()
    assert not LogEntry.objects.filter(object_id=str(old.pk)).exists()
    assert reminded.pk not in Subscriber.objects.values_list("pk", flat=True)
    with time_machine.travel(start, tick=False):
        assert delivery.delete_stale_pending() == 0


@pytest.mark.django_db
def test_a_deleted_pending_reader_with_history_leaves_nothing_waiting(start, settings):
    """Confirmed once, left, signed up again and never confirmed: their old
    deliveries keep the mailing's counts, and nothing waits for them."""
    from tests.subscriptions.test_delivery import Post

    settings.SUBSCRIPTIONS_PENDING_MAX_AGE = timedelta(days=30)
    reader = pending(start, 31 * DAY, "back@example.com")
    mailing, _ = delivery.announce(Post())
    Delivery.objects.create(mailing=mailing, subscriber=reader, status=Delivery.Status.DIGEST)
    Mailing.objects.filter(pk=mailing.pk).update(fanout_done=True)
    with time_machine.travel(start, tick=False):
        assert delivery.delete_stale_pending() == 1
    [row] = Delivery.objects.all()
    assert row.subscriber is None and row.status == Delivery.Status.SKIPPED


@pytest.mark.django_db
def test_nothing_is_deleted_when_turned_off(start, settings):
    settings.SUBSCRIPTIONS_PENDING_MAX_AGE = None
    pending(start, 400 * DAY)
    assert delivery.delete_stale_pending() == 0
    assert Subscriber.objects.count() == 1


@pytest.mark.django_db
def test_the_admin_shows_reminders_and_what_the_clean_up_deleted(
    start, settings, admin_client, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_REMIND_AFTER = timedelta(days=3)
    settings.SUBSCRIPTIONS_PENDING_MAX_AGE = timedelta(days=30)
    reminded = pending(start, 4 * DAY, "reminded@example.com")
    waiting = pending(start, DAY, "waiting@example.com")
    pending(start, 31 * DAY, "gone@example.com")
    with django_capture_on_commit_callbacks(execute=False):
        delivery.remind_pending()
    delivery.delete_stale_pending()
    html = admin_client.get("/admin/subscriptions/subscriber/").content.decode()
    assert (
        "Pending addresses get one reminder 3 days after their confirmation email "
        "and are deleted after 30 days." in html
    )
    assert re.search(r"Last run [\d-]+ [\d:]+: 1 reminded\.", html)
    assert re.search(r"Last run [\d-]+ [\d:]+: 1 deleted\.", html)
    html = admin_client.get("/admin/subscriptions/subscriber/?reminded=yes").content.decode()
    assert reminded.email in html and waiting.email not in html
    html = admin_client.get("/admin/subscriptions/subscriber/?reminded=no").content.decode()
    assert waiting.email in html and reminded.email not in html
    page = admin_client.get(f"/admin/subscriptions/subscriber/{reminded.pk}/change/")
    assert "Reminded at" in page.content.decode()
