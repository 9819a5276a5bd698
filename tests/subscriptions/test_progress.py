"""A mailing's progress counts: counted while it is in flight, stored on it
once it is done, and moved by every later change of its deliveries, so the
admin shows exact numbers without counting a done mailing's rows."""

import contextlib
import importlib
import threading
from datetime import timedelta

import pytest
import time_machine
from django.apps import apps
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Count, Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import subscriptions
from subscriptions import delivery
from subscriptions.models import MAX_ID, Delivery, Digest, Mailing
from subscriptions.templatetags.subscriptions_admin import subscriptions_dashboard
from tests.factories import make_subscriber
from tests.subscriptions.test_delivery import Post, _announce_and_fan_out
from tests.support import wait_until

pytestmark = pytest.mark.django_db

S = Delivery.Status
COUNTS = ["sent", "failed", "pending", "digest", "skipped", "ambiguous"]


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("chief", "chief@example.com", "pw-chief-1234")
    client.force_login(user)
    return client


def live(mailing):
    """The mailing's counts, counted over its deliveries here."""
    counts = Delivery.objects.filter(mailing=mailing).aggregate(
        sent=Count("pk", filter=Q(status=S.SENT)),
        failed=Count("pk", filter=Q(status=S.FAILED)),
        pending=Count("pk", filter=Q(status__in=[S.PENDING, S.SENDING])),
        digest=Count("pk", filter=Q(status=S.DIGEST)),
        skipped=Count("pk", filter=Q(status=S.SKIPPED)),
        ambiguous=Count("pk", filter=Q(ambiguous=True)),
    )
    return counts


def shown(mailing):
    """The counts the admin shows (MailingQuerySet.with_progress)."""
    row = Mailing.objects.with_progress().get(pk=mailing.pk)
    return {name: getattr(row, f"{name}_count") for name in COUNTS}


def assert_exact(mailing, **expected):
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE
    assert mailing.done_sent is not None  # the stored counts are what is shown
    assert shown(mailing) == live(mailing) == {name: 0 for name in COUNTS} | expected


def next_morning():
    return time_machine.travel(timezone.now() + timedelta(days=1, hours=8))


@pytest.fixture
def done_mailing(smtp_server, django_capture_on_commit_callbacks):
    """A done mailing: two instant readers sent, one refused for good, and
    two daily readers waiting for their digest."""
    readers = {
        "instant": [make_subscriber(f"instant{i}@example.com") for i in range(2)],
        "refused": make_subscriber("refused@example.com"),
        "daily": [make_subscriber(f"daily{i}@example.com", frequency="daily") for i in range(2)],
    }
    smtp_server.refuse["refused@example.com"] = [550]
    mailing = _announce_and_fan_out(Post(), django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    assert_exact(mailing, sent=2, failed=1, digest=2)
    return mailing, readers


def send_digests(capture):
    with next_morning(), capture(execute=False):
        Digest.objects.create_due()
        delivery.send_digest_batch(0, MAX_ID)


def test_a_mailing_stores_its_counts_when_it_finishes(done_mailing):
    mailing, _ = done_mailing
    assert (mailing.done_sent, mailing.done_failed, mailing.done_digest) == (2, 1, 2)


def test_digests_sent_after_the_mailing_is_done_move_its_counts(
    done_mailing, django_capture_on_commit_callbacks
):
    mailing, _ = done_mailing
    send_digests(django_capture_on_commit_callbacks)
    assert_exact(mailing, sent=4, failed=1)


def test_a_refused_digest_moves_its_posts_to_failed(
    done_mailing, smtp_server, django_capture_on_commit_callbacks
):
    mailing, readers = done_mailing
    smtp_server.refuse[readers["daily"][0].email] = [550]
    send_digests(django_capture_on_commit_callbacks)
    assert_exact(mailing, sent=3, failed=2)


def test_a_digest_the_sweeper_finds_sent_moves_its_posts_to_sent(
    done_mailing, django_capture_on_commit_callbacks
):
    mailing, _ = done_mailing
    with next_morning(), django_capture_on_commit_callbacks(execute=False):
        Digest.objects.create_due()
        claimed = Digest.objects.claim(10)
        # The journal says the first was sent before its worker died.
        Digest.objects.release([d.pk for d in claimed], sent=[claimed[0].pk])
    assert_exact(mailing, sent=3, failed=1, digest=1)


def test_a_reader_who_erases_themselves_moves_the_counts_not_the_rows(done_mailing):
    mailing, readers = done_mailing
    readers["daily"][0].erase()  # waiting for a digest: skipped
    readers["instant"][0].erase()  # sent: stays sent, without the address
    assert_exact(mailing, sent=2, failed=1, digest=1, skipped=1)


def test_withdrawing_a_done_post_skips_its_digest_readers_in_the_counts(done_mailing):
    mailing, _ = done_mailing
    subscriptions.withdraw(Post(pk=int(mailing.post_key.rsplit(":", 1)[1])))
    assert_exact(mailing, sent=2, failed=1, skipped=2)


def test_retrying_failed_counts_again_until_the_mailing_is_done_again(
    done_mailing, smtp_server, django_capture_on_commit_callbacks
):
    mailing, _ = done_mailing
    with django_capture_on_commit_callbacks(execute=False):
        assert delivery.retry_failed(mailing) == 1
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.SENDING
    assert mailing.done_sent is None  # counted while it is in flight
    assert (
        shown(mailing)
        == live(mailing)
        == {
            "sent": 2,
            "failed": 0,
            "pending": 1,
            "digest": 2,
            "skipped": 0,
            "ambiguous": 0,
        }
    )
    smtp_server.refuse.clear()
    with django_capture_on_commit_callbacks(execute=False):
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    assert_exact(mailing, sent=3, digest=2)


def test_the_migration_stores_the_counts_of_mailings_already_done(done_mailing):
    mailing, _ = done_mailing
    fields = ["done_sent", "done_failed", "done_skipped", "done_digest", "done_ambiguous"]
    Mailing.objects.update(**dict.fromkeys(fields))
    migration = importlib.import_module("subscriptions.migrations.0011_mailing_done_counts")
    migration.store_done_counts(apps, None)
    assert_exact(mailing, sent=2, failed=1, digest=2)


def _finished(title, sent):
    """A mailing whose `sent` readers were all sent to, done through
    finish_if_done (which stores its counts)."""
    mailing = Mailing.objects.create(
        post_key=f"test:{title}",
        title=title,
        url="http://127.0.0.1/",
        subject=title,
        text=title,
        html=title,
        status=Mailing.Status.SENDING,
        fanout_done=True,
    )
    Delivery.objects.bulk_create(
        [Delivery(mailing=mailing, status=S.SENT) for _ in range(sent)], batch_size=1000
    )
    assert mailing.finish_if_done()
    return mailing


def _in_flight(title, pending):
    mailing = _finished(title, 0)
    Mailing.objects.filter(pk=mailing.pk).update(status=Mailing.Status.SENDING)
    Delivery.objects.bulk_create([Delivery(mailing=mailing) for _ in range(pending)])
    return mailing


@contextlib.contextmanager
def delivery_work():
    """How much work the database did meanwhile, in a number that does not
    depend on time: on PostgreSQL, the delivery table's rows and index
    entries read (this transaction's statistics); on SQLite, the virtual
    machine's instructions over every statement."""
    work = [0]
    if connection.vendor == "postgresql":

        def read():
            # Index entries read (index-only counts read no table row) and
            # table rows read, by this transaction so far.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0)"
                    " + pg_stat_get_xact_tuples_returned(%s::regclass)"
                    " FROM pg_index WHERE indrelid = %s::regclass",
                    [Delivery._meta.db_table] * 2,
                )
                return cursor.fetchone()[0]

        before = read()
        yield work
        work[0] = read() - before
        return
    connection.ensure_connection()
    raw = connection.connection

    def step():
        work[0] += 1

    raw.set_progress_handler(step, 1)
    try:
        yield work
    finally:
        raw.set_progress_handler(None, 1)


def test_the_mailing_list_does_not_count_the_deliveries_of_done_mailings(admin_client):
    admin_client.get("/admin/subscriptions/mailing/")  # URLconf, sessions: loaded once
    work = []
    for n, sent in enumerate((10, 1000)):
        Mailing.objects.all().delete()
        _finished(f"done {n}", sent)
        with delivery_work() as done:
            response = admin_client.get("/admin/subscriptions/mailing/")
        assert response.status_code == 200
        assert f"{sent} sent ·" in response.content.decode()
        work.append(done[0])
    # The same work at ten rows or a thousand: the stored counts are read.
    assert work[0] == work[1]


def test_the_mailing_list_and_dashboard_take_a_constant_number_of_queries(
    admin_client, django_assert_num_queries
):
    admin_client.get("/admin/subscriptions/mailing/")
    pages, dashboards = [], []
    for many in (1, 12):
        Mailing.objects.all().delete()
        for i in range(many):
            _finished(f"done {i}", 3)
        _in_flight("in flight", 2)
        with CaptureQueriesContext(connection) as page:
            response = admin_client.get("/admin/subscriptions/mailing/")
        assert response.status_code == 200
        pages.append(len(page.captured_queries))
        with django_assert_num_queries(2):  # subscribers by status, the mailings
            dashboard = subscriptions_dashboard(count=20)
        dashboards.append([(m.sent_count, m.pending_count) for m, *_ in dashboard["mailings"]])
    assert pages[0] == pages[1]
    assert dashboards == [[(0, 2), (3, 0)], [(0, 2)] + [(3, 0)] * 12]


def test_mailings_sort_by_their_counts_done_or_in_flight():
    five, three, one = _finished("five", 5), _in_flight("three", 3), _finished("one", 1)
    rows = Mailing.objects.with_progress()
    assert list(rows.order_by("-sent_count")) == [five, one, three]
    assert list(rows.order_by("-pending_count", "-sent_count")) == [three, five, one]


# A mailing finishing while a digest records its posts (two workers): on
# PostgreSQL, whose transactions run side by side; SQLite runs one writing
# transaction at a time (IMMEDIATE), so the two cannot interleave there.
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite runs one writing transaction at a time"
)


def _finishing():
    """A mailing whose last batch is recorded: two readers sent, two daily
    readers' posts waiting for their digest; finish_if_done finishes it."""
    mailing = _in_flight("finishing", 0)
    Delivery.objects.bulk_create(
        [Delivery(mailing=mailing, status=s) for s in (S.SENT, S.SENT, S.DIGEST, S.DIGEST)]
    )
    return mailing


def _waiting_for_a_lock():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def _race(first, second):
    """Run first() in a transaction held open until second(), started
    meanwhile in another thread, waits for it (or is done); then let both
    finish."""
    held, release, errors = threading.Event(), threading.Event(), []

    def hold():
        try:
            with transaction.atomic():
                first()
                held.set()
                release.wait(30)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
            held.set()
        finally:
            connection.close()

    def run():
        try:
            second()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    other = threading.Thread(target=run)
    other.start()
    wait_until(lambda: _waiting_for_a_lock() or not other.is_alive(), message="the second")
    release.set()
    holder.join(30)
    other.join(30)
    assert not errors


def _digests_sent(mailing):
    return lambda: Delivery.objects.filter(mailing=mailing, status=S.DIGEST).move(S.SENT)


@postgresql_only
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_digests_recorded_while_the_mailing_finishes_are_counted_once():
    mailing = _finishing()
    _race(_digests_sent(mailing), mailing.finish_if_done)
    assert_exact(mailing, sent=4)


@postgresql_only
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_digests_recorded_just_after_the_mailing_finished_are_counted_once():
    mailing = _finishing()
    _race(mailing.finish_if_done, _digests_sent(mailing))
    assert_exact(mailing, sent=4)
