"""Recovery in seconds (issue 10, item 5): heartbeats tell the sweeper a dead
batch from a live one, an emptied cache tells it the queued tasks are gone,
and neither ever hands a live batch's readers to a second batch.

The tests marked `worker` run real Celery workers over a real Redis against
a real SMTP server (aiosmtpd), with the default CLAIM_TIMEOUT (5 minutes);
the sweeper runs in this process, as beat would run it, every 0.2 s.
"""

import signal
import threading
from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.utils import timezone

import subscriptions
from subscriptions import delivery, heartbeat, transports
from subscriptions.heartbeat import heartbeats
from subscriptions.models import MAX_ID, Delivery, Mailing
from tests.subscriptions.test_delivery import Post, in_flight, readers, received, wait_for_done
from tests.support import wait_until

worker = pytest.mark.django_db(transaction=True, serialized_rollback=True)
SENDING, PENDING, SENT = Delivery.Status.SENDING, Delivery.Status.PENDING, Delivery.Status.SENT


def _fanned_out(capture, n=3):
    readers(n)
    mailing, _ = delivery.announce(Post())
    with capture(execute=False):
        delivery.fan_out(mailing.pk)
    return mailing


def _statuses(mailing):
    return Counter(Delivery.objects.filter(mailing=mailing).values_list("status", flat=True))


# The send journal.


@pytest.mark.parametrize("count", [1, 40])
def test_the_journal_notes_what_was_sent_for_a_week_in_one_command(count):
    """Written in one Redis command (a script setting each key), read back
    by journal_sent as cache.set(key, 1) would be, kept for JOURNAL_SECONDS."""
    from types import SimpleNamespace

    from django_redis import get_redis_connection

    items = [SimpleNamespace(pk=pk) for pk in range(1000, 1000 + count)]
    redis = get_redis_connection("default")
    before = redis.info("commandstats")
    transports._journal(cache, "delivery", items)
    after = redis.info("commandstats")
    calls = {
        name: stats["calls"] - before.get(name, {}).get("calls", 0) for name, stats in after.items()
    }
    assert calls.get("cmdstat_set", 0) == count  # from the script...
    assert calls.get("cmdstat_exec", 0) == 0  # ...not a MULTI/EXEC of SETs
    pks = [i.pk for i in items]
    assert transports.journal_sent("delivery", pks + [999]) == set(pks)
    assert cache.get(transports.journal_key("delivery", 1000)) == 1
    ttl = cache.ttl(transports.journal_key("delivery", pks[-1]))
    assert transports.JOURNAL_SECONDS - 60 < ttl <= transports.JOURNAL_SECONDS


def test_a_journal_redis_will_not_script_is_written_all_the_same(monkeypatch):
    """A Redis that refuses the script (a cluster, whose keys live apart):
    the keys are set one by one, as any cache's."""
    from types import SimpleNamespace

    monkeypatch.setattr(transports, "_SET_ALL", "return redis.call('NOSUCHCOMMAND')")
    items = [SimpleNamespace(pk=pk) for pk in (7, 8, 9)]
    transports._journal(cache, "delivery", items)
    assert transports.journal_sent("delivery", [6, 7, 8, 9]) == {7, 8, 9}


# The sweeper's rules, step by step (time travelled; the cache is real Redis).


@pytest.mark.django_db
def test_a_dead_claim_is_taken_back_after_a_heartbeat_not_after_claim_timeout(
    settings, django_capture_on_commit_callbacks
):
    assert settings.SUBSCRIPTIONS_CLAIM_TIMEOUT == 300  # the default
    mailing = _fanned_out(django_capture_on_commit_callbacks)
    # A worker claims the rows, sends one (journaled) and dies: no heartbeat.
    claimed = Delivery.objects.filter(mailing=mailing).claim(10)
    cache.set(transports.journal_key("delivery", claimed[0].pk), 1)
    start = timezone.now()
    with django_capture_on_commit_callbacks(execute=False):
        delivery.sweep()  # starts watching the cache
    assert _statuses(mailing) == {SENDING: 3}
    with time_machine.travel(start + timedelta(seconds=5)):
        with django_capture_on_commit_callbacks(execute=False):
            delivery.sweep()  # younger than a heartbeat's life: maybe not written yet
    assert _statuses(mailing) == {SENDING: 3}
    with time_machine.travel(start + timedelta(seconds=11)):
        with django_capture_on_commit_callbacks(execute=False) as queued:
            assert delivery.sweep() == [mailing.pk]
        assert _statuses(mailing) == {SENT: 1, PENDING: 2}
        # Due a moment later (RELEASE_DELAY), and its batch is queued now.
        rest = Delivery.objects.filter(mailing=mailing, status=PENDING)
        assert all(d.next_attempt_at > timezone.now() for d in rest)
        assert len(queued) == 1


@pytest.mark.django_db
def test_a_claim_whose_heartbeat_lives_is_never_taken_back_however_old(
    settings, django_capture_on_commit_callbacks
):
    mailing = _fanned_out(django_capture_on_commit_callbacks)
    claimed = Delivery.objects.filter(mailing=mailing).claim(10)
    heartbeats.hold(claimed[0].claim)
    try:
        start = timezone.now()
        with django_capture_on_commit_callbacks(execute=False):
            delivery.sweep()
        # An hour later by the clocks (the heartbeat key lives in real time).
        with time_machine.travel(start + timedelta(hours=1)):
            assert heartbeat.watch() == (True, False)  # missing heartbeats are believed
            with django_capture_on_commit_callbacks(execute=False):
                delivery.sweep()
            assert _statuses(mailing) == {SENDING: 3}
            heartbeats.drop(claimed[0].claim)  # the batch is gone
            with django_capture_on_commit_callbacks(execute=False):
                assert delivery.sweep() == [mailing.pk]
            assert _statuses(mailing) == {PENDING: 3}
    finally:
        heartbeats.drop(claimed[0].claim)


@pytest.mark.django_db
def test_after_an_emptied_cache_lost_tasks_are_requeued_at_once_and_claims_wait(
    settings, django_capture_on_commit_callbacks
):
    """A restarted Redis loses the queued tasks and every heartbeat, the
    live batches' too: the mailing is queued again at once, and no claim is
    taken back until the live batches had time to write theirs again."""
    mailing = _fanned_out(django_capture_on_commit_callbacks, n=4)
    Mailing.objects.filter(pk=mailing.pk).update(status=Mailing.Status.SENDING)
    live = Delivery.objects.filter(mailing=mailing).claim(2)
    start = timezone.now()
    with time_machine.travel(start + timedelta(seconds=30)):
        with django_capture_on_commit_callbacks(execute=False):
            delivery.sweep()
            delivery.sweep()  # one more: the mailing made progress just now
    with time_machine.travel(start + timedelta(seconds=45)):
        heartbeats.hold(live[0].claim)  # the batch's thread writes its key...
        cache.clear()  # ...and Redis restarts
        try:
            with django_capture_on_commit_callbacks(execute=False) as queued:
                assert delivery.sweep() == [mailing.pk]  # its tasks were lost
            assert len(queued) == 1
            assert _statuses(mailing) == {SENDING: 2, PENDING: 2}  # not the claim, yet
            heartbeats.hold(live[0].claim)  # written again
        finally:
            heartbeats.drop(live[0].claim)
    assert cache.get(heartbeat.key(live[0].claim)) is None
    with time_machine.travel(start + timedelta(seconds=52)):
        with django_capture_on_commit_callbacks(execute=False):
            delivery.sweep()  # watched for 7 s only: not believed yet
        assert _statuses(mailing) == {SENDING: 2, PENDING: 2}
    with time_machine.travel(start + timedelta(seconds=56)):
        with django_capture_on_commit_callbacks(execute=False):
            delivery.sweep()  # 11 s: the claim is truly gone
        assert _statuses(mailing) == {PENDING: 4}


@pytest.mark.django_db
def test_without_a_shared_cache_claims_wait_for_claim_timeout(
    settings, django_capture_on_commit_callbacks
):
    settings.CACHES = {
        **settings.CACHES,
        "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    settings.SUBSCRIPTIONS_CACHE = "local"
    mailing = _fanned_out(django_capture_on_commit_callbacks)
    Delivery.objects.filter(mailing=mailing).claim(10)
    start = timezone.now()
    for seconds in (0, 20, 200):
        with time_machine.travel(start + timedelta(seconds=seconds)):
            with django_capture_on_commit_callbacks(execute=False):
                delivery.sweep()
        assert _statuses(mailing) == {SENDING: 3}, seconds
    with time_machine.travel(start + timedelta(seconds=301)):
        with django_capture_on_commit_callbacks(execute=False):
            delivery.sweep()
    assert _statuses(mailing) == {PENDING: 3}


@pytest.mark.django_db
def test_a_sweep_costs_a_few_queries_however_many_readers_and_claims(
    settings, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    mailing = _fanned_out(django_capture_on_commit_callbacks, n=30)
    Mailing.objects.filter(pk=mailing.pk).update(status=Mailing.Status.SENDING)
    for _ in range(3):
        claim = Delivery.objects.filter(mailing=mailing).claim(5)[0].claim
        heartbeats.hold(claim)
    try:
        with django_capture_on_commit_callbacks(execute=False):
            delivery.sweep()  # the first one after an emptied cache looks at more
            for _ in range(3):
                with django_assert_max_num_queries(3):  # claims ×2, stalled mailings
                    assert delivery.sweep() == []
    finally:
        for claim in list(heartbeats.holding()):
            heartbeats.drop(claim)


# A batch whose claim was taken back (believed dead) stops and repeats nobody.


@worker  # committed rows: the sweeper's stand-in runs in a thread
@pytest.mark.timeout(60)
def test_a_live_batch_whose_rows_were_taken_back_sends_them_nobody_twice(
    smtp_server, django_capture_on_commit_callbacks, settings
):
    # One connection, a window of 8: a batch rechecks which rows it holds
    # between calls of SMTP_CONNECTIONS × SMTP_WINDOW messages (8 here).
    settings.SUBSCRIPTIONS_SMTP_CONNECTIONS = 1
    settings.SUBSCRIPTIONS_SMTP_WINDOW = 8
    group = readers(20)
    mailing, _ = delivery.announce(Post())
    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
    smtp_server.delay = 0.1  # the batch takes about 2 s

    def take_back():  # as the sweeper would, had the heartbeat vanished
        from django.db import connections

        try:
            wait_until(lambda: len(smtp_server.messages) >= 3, timeout=30)
            rows = Delivery.objects.filter(mailing=mailing, status=SENDING)
            ids = list(rows.values_list("pk", flat=True))
            sent = transports.journal_sent("delivery", ids)
            Delivery.objects.release(ids, sent, timezone.now() + delivery.RELEASE_DELAY)
        finally:
            connections.close_all()

    thief = threading.Thread(target=take_back)
    thief.start()
    with django_capture_on_commit_callbacks(execute=False):
        first = delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    thief.join()
    assert first < 20  # it stopped sending the rows it no longer held
    wait_until(
        lambda: not Delivery.objects.filter(mailing=mailing, next_attempt_at__gt=timezone.now())
    )
    with django_capture_on_commit_callbacks(execute=False):
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    assert received(smtp_server) == Counter({r.email: 1 for r in group})
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE


# End to end: real workers, real Redis, the default CLAIM_TIMEOUT.


def _sweeping(predicate, timeout, message):
    """Wait for `predicate`, sweeping as beat would meanwhile."""

    def swept():
        delivery.sweep()
        return predicate()

    wait_until(swept, timeout=timeout, message=message, interval=0.2)


@worker
@pytest.mark.timeout(600)
def test_after_a_sigkilled_worker_the_rest_moves_again_within_a_minute(
    celery_worker, smtp_server, start_worker_process, settings
):
    assert settings.SUBSCRIPTIONS_CLAIM_TIMEOUT == 300  # the default
    group = readers(600)
    celery_worker.stop()  # only the worker about to die takes the first tasks
    try:
        doomed = start_worker_process("doomed")
        smtp_server.delay = 0.005  # so that the kill lands mid-batch
        mailing = subscriptions.announce(Post())
        wait_until(lambda: len(smtp_server.messages) >= 150, timeout=60, message="sending")
        doomed.stop(signal.SIGKILL)
        smtp_server.delay = 0
        rows = Delivery.objects.filter(mailing=mailing)
        (dead,) = set(rows.filter(status=SENDING).values_list("claim", flat=True))
        start_worker_process("replacement")
        # Five minutes (CLAIM_TIMEOUT) before heartbeats.
        _sweeping(lambda: not rows.filter(claim=dead).exists(), 60, "the dead claim taken back")
        wait_for_done(mailing, timeout=300, sweep=True)
    finally:
        celery_worker.start()
    counts = received(smtp_server)
    assert set(counts) == {r.email for r in group}
    assert sum(counts.values()) - len(group) <= in_flight()


@worker
@pytest.mark.timeout(600)
def test_after_a_redis_restart_the_rest_moves_again_within_a_minute(
    celery_worker, smtp_server, redis_server, settings
):
    assert settings.SUBSCRIPTIONS_CLAIM_TIMEOUT == 300  # the default
    group = readers(600)
    smtp_server.delay = 0.005  # so that most of the mailing is still queued
    mailing = subscriptions.announce(Post())
    wait_until(lambda: len(smtp_server.messages) >= 150, timeout=60, message="sending")
    redis_server.restart()  # every queued task is lost with it
    smtp_server.delay = 0
    rows = Delivery.objects.filter(mailing=mailing)
    taken = rows.filter(status__in=[SENT, SENDING]).count()  # by the tasks that ran
    assert taken < len(group)
    # Only a task queued after the restart sends more than that.
    _sweeping(lambda: rows.filter(status=SENT).count() > taken, 60, "the rest moving again")
    wait_for_done(mailing, timeout=300, sweep=True)
    counts = received(smtp_server)
    assert set(counts) == {r.email for r in group}
    assert max(counts.values()) == 1


@worker
@pytest.mark.timeout(300)
def test_a_redis_restart_never_hands_a_live_batch_to_the_sweeper(
    celery_worker, smtp_server, redis_server
):
    """The restart wipes the live batch's heartbeat with everything else;
    the batch, slow (a slow mail server), goes on sending for several
    heartbeats after it while the sweeper runs: its rows stay its own."""
    group = readers(120)  # one batch of 100 (the suite's BATCH_SIZE), then 20
    smtp_server.delay = 0.12  # the first batch takes about 12 s
    mailing = subscriptions.announce(Post())
    wait_until(lambda: len(smtp_server.messages) >= 5, timeout=60, message="sending")
    assert Delivery.objects.filter(mailing=mailing, status=SENDING).count() == 100
    redis_server.restart()
    wait_for_done(mailing, timeout=120, sweep=True)
    counts = received(smtp_server)
    assert counts == Counter({r.email: 1 for r in group})
    # Taken back, a row would have been made due again (RELEASE_DELAY).
    assert not Delivery.objects.filter(mailing=mailing, next_attempt_at__isnull=False).exists()


@worker
@pytest.mark.timeout(300)
def test_a_slow_live_batch_is_never_taken_over_while_its_heartbeat_lives(
    celery_worker, smtp_server, start_worker_process, settings
):
    """Heartbeats of 2 s, a batch of 20 s: the sweeper, running all along,
    believes missing heartbeats within 2 s and never takes this one."""
    settings.SUBSCRIPTIONS_HEARTBEAT = 2
    group = readers(100)
    celery_worker.stop()
    try:
        start_worker_process("slow", SUBSCRIPTIONS_HEARTBEAT="2")
        smtp_server.delay = 0.2
        mailing = subscriptions.announce(Post())
        wait_for_done(mailing, timeout=120, sweep=True)
    finally:
        celery_worker.start()
    assert received(smtp_server) == Counter({r.email: 1 for r in group})
    assert not Delivery.objects.filter(mailing=mailing, next_attempt_at__isnull=False).exists()


@worker
@pytest.mark.timeout(120)
def test_beats_sweep_runs_before_the_batches_already_queued(celery_worker, smtp_server, settings):
    """With every worker busy and a mailing's batches queued, the sweeper
    must not wait behind them (a dead worker's readers wait for it)."""
    from celery import current_app

    readers(4)
    smtp_server.delay = 0.5  # the one batch keeps the only worker busy for 2 s
    subscriptions.announce(Post())
    wait_until(lambda: Delivery.objects.filter(status=SENDING).exists(), timeout=30)
    queued = [
        current_app.send_task(
            "celery.accumulate",
            args=(i,),
            kwargs={"index": 0},
            ignore_result=False,
            priority=current_app.conf.task_default_priority,  # as the app's tasks
        )
        for i in range(3)
    ]
    options = dict(settings.CELERY_BEAT_SCHEDULE["sweep-deliveries"]["options"])
    options.pop("expires")
    sweep_like = current_app.send_task(
        "celery.accumulate", args=("sweep",), kwargs={"index": 0}, ignore_result=False, **options
    )

    def finished(result):
        meta = current_app.backend.get_task_meta(result.id)
        return meta.get("status") == "SUCCESS" and meta["date_done"]

    wait_until(lambda: all(finished(r) for r in [*queued, sweep_like]), timeout=60)
    assert finished(sweep_like) < min(finished(r) for r in queued)


class _Row:
    def __init__(self, pk):
        self.pk = pk


@pytest.mark.parametrize("backend", ["redis", "locmem"])
def test_the_send_journal_notes_a_whole_call_and_reads_it_back(backend, settings):
    """A call's accepted readers go into the journal in one command on
    django-redis (a script, transports._set_all) and through set_many on any
    other cache; either way journal_sent() finds exactly them, kept for
    JOURNAL_SECONDS."""
    from django.core.cache import caches

    if backend == "locmem":
        settings.CACHES = {
            **settings.CACHES,
            "journal": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "OPTIONS": {"MAX_ENTRIES": 10_000},
            },
        }
        settings.SUBSCRIPTIONS_CACHE = "journal"
    journal = caches[settings.SUBSCRIPTIONS_CACHE if backend == "locmem" else "default"]
    accepted = [_Row(pk) for pk in range(10, 1010)]
    assert (transports._set_all(journal) is not None) is (backend == "redis")
    transports._journal(journal, "delivery", accepted)
    transports._journal(journal, "delivery", [_Row(5000)])
    sent = transports.journal_sent("delivery", list(range(1, 1011)) + [5000, 5001])
    assert sent == set(range(10, 1010)) | {5000}
    assert transports.journal_sent("digest", list(range(1, 1011))) == set()
    if backend == "redis":
        ttl = journal.ttl(transports.journal_key("delivery", 500))
        assert transports.JOURNAL_SECONDS - 60 < ttl <= transports.JOURNAL_SECONDS


@pytest.mark.django_db
def test_digests_whose_task_was_lost_are_queued_again_looked_for_once_a_minute(
    settings, django_capture_on_commit_callbacks, monkeypatch
):
    from subscriptions import tasks
    from subscriptions.models import Digest

    (reader,) = readers(1)
    start = timezone.now()
    Digest.objects.create(subscriber=reader, period="daily:2026-12-01", created_at=start)
    queued = []
    monkeypatch.setattr(delivery, "enqueue_after_commit", lambda task, *a, **k: queued.append(task))

    def digest_batches_queued_by_a_sweep():
        queued.clear()
        delivery.sweep()
        return queued.count(tasks.send_digest_batch)

    # The first sweep finds the cache emptied (a restarted Redis, as far as it
    # can tell): every due digest is queued at once.
    assert digest_batches_queued_by_a_sweep() == 1
    # Younger than CLAIM_TIMEOUT: its task may well be waiting in the queue.
    with time_machine.travel(start + timedelta(seconds=100), tick=False):
        assert digest_batches_queued_by_a_sweep() == 0
    # Stalled, and last looked for 201 s ago: queued again.
    with time_machine.travel(start + timedelta(seconds=301), tick=False):
        assert digest_batches_queued_by_a_sweep() == 1
    # Looked for 10 s ago: not again before a minute (the scan is not free).
    with time_machine.travel(start + timedelta(seconds=311), tick=False):
        assert digest_batches_queued_by_a_sweep() == 0
    with time_machine.travel(start + timedelta(seconds=362), tick=False):
        assert digest_batches_queued_by_a_sweep() == 1


# The journal on a batch's path: asked about rows a claim gave back, only.


@pytest.mark.django_db
def test_a_reader_a_live_batch_sent_after_its_rows_were_taken_back_is_not_sent_twice(
    mailoutbox, django_capture_on_commit_callbacks
):
    mailing = _fanned_out(django_capture_on_commit_callbacks, n=2)
    first, second = Delivery.objects.filter(mailing=mailing).claim(10)
    # The sweeper believes the batch dead and takes its rows back (no due
    # time given: they are due at once)...
    Delivery.objects.release([first.pk, second.pk], sent=[])
    # ...but it was alive: it sent the first reader's message and noted it.
    cache.set(transports.journal_key("delivery", first.pk), 1)
    with django_capture_on_commit_callbacks(execute=False):
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    assert [m.to for m in mailoutbox] == [[second.subscriber.email]]
    assert _statuses(mailing) == {SENT: 2}


@pytest.mark.django_db
def test_a_first_attempt_is_sent_whatever_the_journal_holds_for_its_row_id(
    mailoutbox, django_capture_on_commit_callbacks
):
    """A key left in the journal (it lives a week in Redis) for the same row
    id by an earlier database — restored from a backup, or reset — does not
    stand for a send nobody made: a row fresh from the fan-out was never
    claimed, so it cannot have been sent."""
    mailing = _fanned_out(django_capture_on_commit_callbacks, n=2)
    for pk in Delivery.objects.filter(mailing=mailing).values_list("pk", flat=True):
        cache.set(transports.journal_key("delivery", pk), 1)
    with django_capture_on_commit_callbacks(execute=False):
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    assert len(mailoutbox) == 2
    assert _statuses(mailing) == {SENT: 2}


@pytest.mark.django_db
def test_a_failed_row_an_editor_sends_again_asks_the_journal_first(
    mailoutbox, django_capture_on_commit_callbacks
):
    """A row an editor retries was claimed before: if the journal says an
    earlier batch got it accepted (the failure was recorded by a batch that
    took it over), it is recorded as sent, not sent again."""
    mailing = _fanned_out(django_capture_on_commit_callbacks, n=2)
    Mailing.objects.filter(pk=mailing.pk).update(status=Mailing.Status.DONE)
    Delivery.objects.filter(mailing=mailing).update(status=Delivery.Status.FAILED)
    first, second = Delivery.objects.filter(mailing=mailing).order_by("pk")
    cache.set(transports.journal_key("delivery", first.pk), 1)
    with django_capture_on_commit_callbacks(execute=False):
        assert delivery.retry_failed(Mailing.objects.get(pk=mailing.pk)) == 2
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    assert [m.to for m in mailoutbox] == [[second.subscriber.email]]
    assert _statuses(mailing) == {SENT: 2}
