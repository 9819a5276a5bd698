"""The fan-out at scale: Mailing.add_deliveries copies the audience into
the ledger with one INSERT ... SELECT per chunk. These tests pin what it
must keep from the row-by-row fan-out it replaced — exactly the readers of
Mailing.recipients, each with the right status and defaults, a constant
number of queries per chunk, and a fan-out that dies mid-way resuming with
no gap and no duplicate. They run on SQLite and, with DATABASE_URL, on
PostgreSQL.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import subscriptions
from subscriptions import delivery
from subscriptions.models import Delivery, Mailing, Subscriber
from tests.factories import make_subscriber
from tests.subscriptions.test_delivery import (
    Post,
    in_flight,
    readers,
    received,
    wait_for_done,
    worker,
)
from tests.support import wait_until

S = Subscriber.Status
F = Subscriber.Frequency
D = Delivery.Status


def announce(post, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # no worker here
        mailing, _ = delivery.announce(post)
    return mailing


def ledger(mailing):
    """{email: status} of the mailing's deliveries; fails on a duplicate."""
    rows = list(Delivery.objects.filter(mailing=mailing).values_list("subscriber__email", "status"))
    assert len(rows) == len({email for email, _ in rows}), "a reader has two deliveries"
    return dict(rows)


def audience(live):
    """Readers of every kind the audience rule tells apart; returns the
    {email: delivery status} a post about "sessions" announced at `live`
    must record."""
    before, after = live - timedelta(minutes=1), live + timedelta(minutes=1)
    expected = {
        make_subscriber("all-instant@example.com", confirmed_at=before).email: D.PENDING,
        make_subscriber("all-daily@example.com", frequency=F.DAILY, confirmed_at=before).email: (
            D.DIGEST
        ),
        make_subscriber("all-weekly@example.com", frequency=F.WEEKLY, confirmed_at=before).email: (
            D.DIGEST
        ),
        # Imported as confirmed, with no confirmation time: in.
        make_subscriber("imported@example.com", confirmed_at=None).email: D.PENDING,
        make_subscriber("sessions@example.com", topics=["sessions"], confirmed_at=before).email: (
            D.PENDING
        ),
        make_subscriber(
            "both@example.com", topics=["sessions", "el-paso"], confirmed_at=before
        ).email: D.PENDING,
        make_subscriber(
            "sessions-weekly@example.com",
            topics=["sessions"],
            frequency=F.WEEKLY,
            confirmed_at=before,
        ).email: D.DIGEST,
    }
    # Not in the audience: another topic only, not confirmed (each other
    # status), or confirmed after the post went live.
    make_subscriber("el-paso@example.com", topics=["el-paso"], confirmed_at=before)
    for status in (S.PENDING, S.UNSUBSCRIBED, S.SUPPRESSED):
        make_subscriber(f"{status}@example.com", status=status, confirmed_at=before)
    make_subscriber("late@example.com", confirmed_at=after)
    make_subscriber("late-sessions@example.com", topics=["sessions"], confirmed_at=after)
    return expected


@pytest.mark.django_db
@pytest.mark.parametrize("batch_size", [1, 3, 500])
def test_the_fan_out_records_exactly_the_audience_with_each_readers_status(
    settings, django_capture_on_commit_callbacks, batch_size
):
    settings.SUBSCRIPTIONS_BATCH_SIZE = batch_size
    live = timezone.now()
    expected = audience(live)
    mailing = announce(Post(topics=["sessions"]), django_capture_on_commit_callbacks)
    Mailing.objects.filter(pk=mailing.pk).update(created_at=live)
    mailing.refresh_from_db()
    # The rule itself, as the rest of the app reads it, agrees.
    assert set(mailing.recipients().values_list("email", flat=True)) == set(expected)

    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)

    assert ledger(mailing) == expected
    # Every other column holds its field's default, as a Delivery() would.
    row = Delivery.objects.filter(mailing=mailing).first()
    fresh = Delivery()
    for name in ("attempts", "permanent", "ambiguous", "error", "claim", "digest_id"):
        assert getattr(row, name) == getattr(fresh, name), name
    assert row.next_attempt_at is None and row.claimed_at is None and row.sent_at is None
    assert live <= row.created_at <= timezone.now()
    mailing.refresh_from_db()
    assert mailing.fanout_done
    last = Subscriber.objects.filter(email__in=expected).order_by("pk").last()
    assert mailing.fanout_cursor == last.pk


@pytest.mark.django_db
def test_each_chunk_reports_its_readers_range_and_whether_any_reads_instantly(
    settings, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_BATCH_SIZE = 2
    instant = make_subscriber("instant@example.com")
    daily = [make_subscriber(f"daily{i}@example.com", frequency=F.DAILY) for i in range(2)]
    make_subscriber("pending@example.com", status=S.PENDING)  # skipped over
    last = make_subscriber("last@example.com")
    mailing = announce(Post(), django_capture_on_commit_callbacks)

    chunks = []
    while chunk := mailing.add_deliveries():
        chunks.append(chunk)

    assert chunks == [
        (instant.pk, daily[0].pk, True),
        (daily[1].pk, last.pk, True),
    ]
    # A chunk of digest readers only queues no batch.
    settings.SUBSCRIPTIONS_BATCH_SIZE = 1
    again = announce(Post(), django_capture_on_commit_callbacks)
    assert [again.add_deliveries() for _ in range(2)] == [
        (instant.pk, instant.pk, True),
        (daily[0].pk, daily[0].pk, False),
    ]


@pytest.mark.django_db
def test_a_fan_out_chunk_costs_the_same_queries_whatever_its_size(
    settings, django_capture_on_commit_callbacks
):
    counts = []
    for size in (5, 200):
        settings.SUBSCRIPTIONS_BATCH_SIZE = size
        for i in range(size):
            make_subscriber(f"r{size}-{i}@example.com")
            if i % 2:
                make_subscriber(f"t{size}-{i}@example.com", topics=["sessions"], frequency=F.DAILY)
        mailing = announce(Post(topics=["sessions"]), django_capture_on_commit_callbacks)
        with CaptureQueriesContext(connection) as queries:
            first, last, _ = mailing.add_deliveries()
        assert Delivery.objects.filter(mailing=mailing).count() == size
        statements = [
            q["sql"]
            for q in queries.captured_queries
            if not q["sql"].upper().startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))
        ]
        counts.append(len(statements))
        Subscriber.objects.all().delete()
    # Find the chunk, copy it, move the cursor: nothing per reader.
    assert counts == [3, 3]


@pytest.mark.django_db
def test_a_whole_fan_out_costs_three_queries_a_chunk(
    settings, django_capture_on_commit_callbacks, django_assert_num_queries
):
    settings.SUBSCRIPTIONS_BATCH_SIZE = 10
    for i in range(45):
        make_subscriber(f"r{i}@example.com")
    mailing = announce(Post(), django_capture_on_commit_callbacks)
    counted = []

    def count(execute, sql, params, many, context):
        if not sql.upper().startswith(("SAVEPOINT", "RELEASE")):
            counted.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count), django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
    # Load and start the mailing (2), five chunks (3 each), the end (find
    # nothing, mark the fan-out done), finish_if_done (1).
    assert len(counted) == 2 + 5 * 3 + 2 + 1
    assert Delivery.objects.filter(mailing=mailing).count() == 45


class Crash(Exception):
    pass


def crash_on(fragment):
    """An execute wrapper that dies when a statement containing `fragment`
    is about to run: the process stops there, as if killed."""

    def wrapper(execute, sql, params, many, context):
        if fragment in sql:
            raise Crash(fragment)
        return execute(sql, params, many, context)

    return wrapper


@pytest.mark.django_db
@pytest.mark.parametrize(
    "dies_at",
    [
        "INSERT",  # before the chunk is copied
        'UPDATE "subscriptions_mailing" SET "fanout_cursor"',  # copied, cursor not moved
    ],
)
def test_a_fan_out_that_dies_mid_way_resumes_with_no_gap_and_no_duplicate(
    settings, dies_at, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_BATCH_SIZE = 4
    everyone = [make_subscriber(f"r{i}@example.com") for i in range(10)]
    mailing = announce(Post(), django_capture_on_commit_callbacks)
    running = Mailing.objects.get(pk=mailing.pk)
    running.add_deliveries()
    with connection.execute_wrapper(crash_on(dies_at)), pytest.raises(Crash):
        running.add_deliveries()
    assert Delivery.objects.filter(mailing=mailing).count() == 4  # the second chunk is lost whole

    # Meanwhile a reader leaves and another confirms: neither changes the
    # audience fixed when the post went live, except that the one who left
    # is not sent to (the batch skips them; the fan-out may list them).
    everyone[6].unsubscribe()
    make_subscriber("newcomer@example.com", confirmed_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)  # the sweeper queues it again; it loads the mailing afresh

    expected = {r.email for r in everyone} - {everyone[6].email}
    assert set(ledger(mailing)) == expected
    mailing.refresh_from_db()
    assert mailing.fanout_done


@worker
def test_a_worker_killed_during_the_fan_out_leaves_no_gap_and_no_duplicate(
    celery_worker, smtp_server, start_worker_process, settings
):
    """The same, with a real process: SIGKILL the only worker while the
    fan-out still has chunks to list (it lists one chunk per task, between
    batches); the sweeper queues the fan-out again and a new worker lists
    the rest."""
    import signal

    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 15  # the sweep runs here
    chunked = {"SUBSCRIPTIONS_BATCH_SIZE": "100", "SUBSCRIPTIONS_CLAIM_TIMEOUT": "15"}
    group = readers(600)
    celery_worker.stop()
    try:
        doomed = start_worker_process("doomed", **chunked)
        smtp_server.delay = 0.005  # batches take long enough to kill one mid-way
        mailing = subscriptions.announce(Post())
        wait_until(lambda: len(smtp_server.messages) >= 150, timeout=60, message="sending")
        doomed.stop(signal.SIGKILL)
        smtp_server.delay = 0
        mailing.refresh_from_db()
        assert not mailing.fanout_done  # killed with readers still to list
        start_worker_process("replacement", **chunked)
        wait_for_done(mailing, timeout=180, sweep=True)
    finally:
        celery_worker.start()
    assert set(ledger(mailing)) == {r.email for r in group}
    counts = received(smtp_server)
    assert set(counts) == {r.email for r in group}
    assert sum(counts.values()) - len(group) <= in_flight()


@pytest.mark.django_db
def test_a_chunk_recorded_twice_is_harmless(settings, django_capture_on_commit_callbacks):
    """A second fan-out racing the first, or a stale instance resuming from
    an old cursor, copies rows that exist already: the unique (mailing,
    subscriber) constraint skips them, nothing fails, nobody is doubled."""
    settings.SUBSCRIPTIONS_BATCH_SIZE = 3
    everyone = [make_subscriber(f"r{i}@example.com") for i in range(7)]
    mailing = announce(Post(), django_capture_on_commit_callbacks)
    stale = Mailing.objects.get(pk=mailing.pk)
    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
    while stale.add_deliveries():  # from cursor 0 again
        pass
    assert set(ledger(mailing)) == {r.email for r in everyone}


@pytest.mark.django_db
def test_seeded_benchmark_readers_are_an_audience_like_any_other(
    settings, django_capture_on_commit_callbacks
):
    from tests.benchmarks.common import seed_readers

    settings.SUBSCRIPTIONS_BATCH_SIZE = 7
    first, last = seed_readers(20)
    topical = seed_readers(9, topics=["sessions", "el-paso", "nasa"], prefix="t")
    daily = seed_readers(4, frequency=F.DAILY, prefix="d")
    assert last - first == 19
    assert Subscriber.objects.filter(email="reader20@example.com", status=S.CONFIRMED).exists()
    mailing = announce(Post(topics=["sessions"]), django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
    statuses = ledger(mailing)
    assert len(statuses) == 20 + 3 + 4
    assert sum(1 for e in statuses if e.startswith("t")) == 3
    assert {statuses[f"d{i}@example.com"] for i in range(1, 5)} == {D.DIGEST}
    assert topical[1] - topical[0] == 8 and daily[1] - daily[0] == 3


@pytest.mark.django_db
def test_progress_counts_each_status_of_each_mailing(django_capture_on_commit_callbacks):
    everyone = [make_subscriber(f"r{i}@example.com") for i in range(9)]
    busy = announce(Post(), django_capture_on_commit_callbacks)
    idle = announce(Post(), django_capture_on_commit_callbacks)  # no deliveries yet
    statuses = [D.SENT, D.SENT, D.SENT, D.FAILED, D.PENDING, D.SENDING, D.DIGEST, D.SKIPPED]
    Delivery.objects.bulk_create(
        Delivery(mailing=busy, subscriber=reader, status=status, ambiguous=index < 2)
        for index, (reader, status) in enumerate(zip(everyone, statuses, strict=False))
    )

    counts = {
        m.pk: (
            m.sent_count,
            m.failed_count,
            m.pending_count,
            m.digest_count,
            m.skipped_count,
            m.ambiguous_count,
        )
        for m in Mailing.objects.with_progress().order_by("pending_count")
    }
    assert counts == {busy.pk: (3, 1, 2, 1, 1, 2), idle.pk: (0, 0, 0, 0, 0, 0)}
    assert list(
        Mailing.objects.with_progress().order_by("-pending_count").values_list("pk", flat=True)
    ) == [busy.pk, idle.pk]


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner")
def test_a_claim_reads_its_own_rows_not_the_whole_ledger_on_postgresql(
    settings, django_capture_on_commit_callbacks
):
    """A claim's UPDATE finds the rows it chose by primary key. Written as
    `id IN (subquery)`, PostgreSQL joined the chosen ids to a sequential
    scan of every delivery of every mailing once a claim was a few
    thousand rows: each batch of a million-reader mailing read the whole
    ledger."""
    from tests.benchmarks.common import seed_readers

    settings.SUBSCRIPTIONS_BATCH_SIZE = 20_000
    seed_readers(40_000)
    mailing = announce(Post(), django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    with CaptureQueriesContext(connection) as queries:
        claimed = mailing.deliveries_between(0, 2**62).claim(5_000)
    assert len(claimed) == 5_000
    (update,) = [q["sql"] for q in queries if q["sql"].startswith("UPDATE")]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {update}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan, plan
