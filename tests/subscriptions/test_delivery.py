"""Delivery: every post reaches each matching reader exactly once.

The tests marked `worker` run a real Celery worker process over a real Redis
and count what a real SMTP server (aiosmtpd) received; the others call the
model methods in this process, against the same SMTP server.
"""

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import time_machine
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

import subscriptions
from subscriptions import delivery, tokens
from subscriptions.models import MAX_ID, Delivery, Mailing, Subscriber
from tests.factories import make_subscriber, signed_key
from tests.support import wait_until

S = Subscriber.Status
F = Subscriber.Frequency
worker = pytest.mark.django_db(transaction=True, serialized_rollback=True)

_ids = iter(range(1, 10**6))


@dataclass
class Post:
    """A post as another site would hand it to subscriptions.announce()."""

    title: str = "Sessions visits El Paso"
    topics: list = field(default_factory=list)
    summary: str = "The former attorney general spoke at the border."
    pk: int = field(default_factory=lambda: next(_ids))
    published_at = None

    def get_absolute_url(self):
        return f"/posts/{self.pk}/"

    def email_summary(self):
        return self.summary

    def topic_keys(self):
        return self.topics

    def topic_links(self):
        return [
            (key.replace("-", " ").title(), f"http://127.0.0.1:8000/t/{key}/")
            for key in self.topics
        ]


def readers(n, **fields):
    return [make_subscriber(f"reader{i}-{next(_ids)}@example.com", **fields) for i in range(n)]


def wait_for_done(mailing, timeout=60, sweep=False):
    def done():
        if sweep:
            delivery.sweep()
        mailing.refresh_from_db()
        return mailing.status == Mailing.Status.DONE

    wait_until(done, timeout=timeout, message=f"mailing {mailing.pk} to finish", interval=0.2)


def received(smtp_server):
    """Counter of envelope recipients over every message received."""
    return Counter(rcpt for m in smtp_server.messages for rcpt in m.envelope_recipients)


def in_flight():
    """The most messages a worker killed while sending over SMTP may repeat:
    the messages in flight, a window (SMTP_WINDOW, the test server offering
    CHUNKING) on each of its SMTP_CONNECTIONS connections. The suite's
    workers run with the same settings as this process."""
    from subscriptions.conf import conf

    return conf.SMTP_CONNECTIONS * max(1, conf.SMTP_WINDOW)


@worker
def test_it_sends_one_message_to_each_matching_reader_and_nobody_else(celery_worker, smtp_server):
    everything = make_subscriber("everything@example.com")
    follower = make_subscriber("follower@example.com", topics=["el-paso"])
    three = make_subscriber(
        "three@example.com", topics=["el-paso", "jeff-sessions", "justice-department"]
    )
    make_subscriber("other-topic@example.com", topics=["someone-else"])
    make_subscriber("pending@example.com", status=S.PENDING)
    make_subscriber("unsubscribed@example.com", status=S.UNSUBSCRIBED)
    make_subscriber("suppressed@example.com", status=S.SUPPRESSED)
    make_subscriber("daily@example.com", frequency=F.DAILY)
    make_subscriber("weekly@example.com", frequency=F.WEEKLY, topics=["el-paso"])

    mailing = subscriptions.announce(
        Post(topics=["el-paso", "jeff-sessions", "justice-department"])
    )
    wait_for_done(mailing)
    celery_worker.drain()

    assert received(smtp_server) == Counter(
        {everything.email: 1, follower.email: 1, three.email: 1}
    )
    counts = Counter(Delivery.objects.filter(mailing=mailing).values_list("status", flat=True))
    assert counts == {Delivery.Status.SENT: 3, Delivery.Status.DIGEST: 2}


@worker
def test_announcing_twice_and_concurrently_makes_one_mailing(celery_worker, smtp_server):
    group = readers(30)
    post = Post()
    results = []

    def announce():
        try:
            results.append(subscriptions.announce(post).pk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=announce) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.append(subscriptions.announce(post).pk)

    assert len(set(results)) == 1
    assert Mailing.objects.count() == 1
    wait_for_done(Mailing.objects.get())
    celery_worker.drain()
    assert received(smtp_server) == Counter({r.email: 1 for r in group})


@worker
def test_two_workers_and_repeated_batch_tasks_still_send_one_each(
    celery_worker, smtp_server, start_worker_process
):
    from subscriptions.tasks import send_mailing_batch

    start_worker_process("second")
    group = readers(450)
    mailing = subscriptions.announce(Post())
    for _ in range(3):  # A redelivered or duplicated task finds nothing to send.
        send_mailing_batch.delay(mailing.pk, 0, MAX_ID)
    wait_for_done(mailing)
    celery_worker.drain()
    assert received(smtp_server) == Counter({r.email: 1 for r in group})


@worker
def test_transient_refusals_are_retried_and_permanent_ones_fail(celery_worker, smtp_server):
    group = readers(40)
    flaky = group[:4]  # 10 %: 451 once, then accepted.
    gone = group[4:6]  # 550 for good.
    for reader in flaky:
        smtp_server.refuse[reader.email] = [451, 1]
    for reader in gone:
        smtp_server.refuse[reader.email] = [550, None]

    mailing = subscriptions.announce(Post())
    wait_for_done(mailing)
    celery_worker.drain()

    assert received(smtp_server) == Counter({r.email: 1 for r in group if r not in gone})
    assert {(a, c) for a, c in smtp_server.refused if c == 451} == {(r.email, 451) for r in flaky}
    for reader in flaky:
        delivery = Delivery.objects.get(mailing=mailing, subscriber=reader)
        assert (delivery.status, delivery.attempts) == (Delivery.Status.SENT, 1)
    for reader in gone:
        delivery = Delivery.objects.get(mailing=mailing, subscriber=reader)
        assert delivery.status == Delivery.Status.FAILED
        assert delivery.permanent and delivery.error.startswith("550")


# A worker killed mid-mailing and a Redis restart mid-mailing: see
# test_recovery.py.


# In this process: the delivery functions the tasks call.


def _announce_and_fan_out(post, django_capture_on_commit_callbacks):
    mailing, _ = delivery.announce(post)
    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
    return mailing


@pytest.mark.django_db
def test_a_reader_who_unsubscribes_during_a_mailing_gets_nothing_more(
    smtp_server, django_capture_on_commit_callbacks
):
    stays, leaves = readers(2)
    mailing = _announce_and_fan_out(Post(), django_capture_on_commit_callbacks)
    leaves.unsubscribe()
    with django_capture_on_commit_callbacks(execute=False):
        assert delivery.send_mailing_batch(mailing.pk, 0, MAX_ID) == 1
    assert received(smtp_server) == Counter({stays.email: 1})
    assert Delivery.objects.get(subscriber=leaves).status == Delivery.Status.SKIPPED
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE


@pytest.mark.django_db
# Links are signed with the time: the same second for the batch and for the
# expected links (a first batch in a process loads the URLconf, ~1 s).
@time_machine.travel(datetime(2026, 12, 1, 12, tzinfo=UTC), tick=False)
def test_each_message_is_multipart_with_one_click_unsubscribe_headers(
    smtp_server, client, django_capture_on_commit_callbacks, settings
):
    settings.SUBSCRIPTIONS_UNSUBSCRIBE_MAILTO = "unsubscribe@example.com"
    settings.SUBSCRIPTIONS_POSTAL_ADDRESS = "1 Printing House Square, London"
    first, second = (
        make_subscriber("ann@example.com", name="Ann Ñ"),
        make_subscriber("bob@example.com"),
    )
    mailing = _announce_and_fan_out(
        Post(title="Breaking\r\nBcc: victim@example.com", topics=["el-paso"]),
        django_capture_on_commit_callbacks,
    )
    with django_capture_on_commit_callbacks(execute=False):
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    messages = smtp_server.wait_for(2)
    by_rcpt = {m.envelope_recipients[0]: m for m in messages}
    message = by_rcpt[first.email]

    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"] == "Breaking Bcc: victim@example.com"
    assert message["Bcc"] is None
    assert all("victim" not in rcpt for m in messages for rcpt in m.envelope_recipients)
    assert message["To"].addresses[0].display_name == "Ann Ñ"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Newsroom <127.0.0.1>"
    https_url, mailto = [v.strip(" <>") for v in message["List-Unsubscribe"].split(",")]
    # The reader's own links (each signed in the worker at its own second,
    # so compared by what they sign, not character for character).
    assert signed_key(https_url, "one-click", tokens.UNSUBSCRIBE) == first.key
    assert mailto == "mailto:unsubscribe@example.com?subject=unsubscribe"
    assert by_rcpt[first.email]["Message-ID"] != by_rcpt[second.email]["Message-ID"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        assert signed_key(body, "unsubscribe", tokens.UNSUBSCRIBE) == first.key
        assert signed_key(body, "preferences", tokens.PREFERENCES) == first.key
        assert "1 Printing House Square" in body
        assert "http://127.0.0.1:8000/posts/" in body
    assert 'style="' in html  # CSS inlined
    assert "QZXPLACEHOLDER" not in message.as_string()

    # The one-click URL works, without a CSRF token.
    path = https_url.removeprefix("http://127.0.0.1:8000")
    response = client.post(
        path, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    first.refresh_from_db()
    assert first.status == S.UNSUBSCRIBED


@pytest.mark.django_db
def test_a_batch_uses_the_same_number_of_queries_whatever_its_size(
    smtp_server, django_capture_on_commit_callbacks, settings, monkeypatch
):
    settings.SUBSCRIPTIONS_BATCH_SIZE = 1000
    # The re-check of the batch's readers is one query per RECHECK_SECONDS of
    # sending (time-driven, not per reader): kept out of this count so that a
    # slow machine cannot change it.
    monkeypatch.setattr("subscriptions.transports.RECHECK_SECONDS", 3600)
    counts = []
    for n in (5, 60):
        readers(n)
        for reader in readers(2):  # some fail for good, some are retried
            smtp_server.refuse[reader.email] = [550, None]
        smtp_server.refuse[readers(1)[0].email] = [451, None]
        mailing = _announce_and_fan_out(Post(), django_capture_on_commit_callbacks)
        with CaptureQueriesContext(connection) as queries:
            with django_capture_on_commit_callbacks(execute=False):
                delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
        counts.append(len(queries.captured_queries))
        Subscriber.objects.all().delete()
    assert counts[0] == counts[1]


@pytest.mark.django_db
def test_paused_mailings_send_nothing_until_resumed(
    smtp_server, django_capture_on_commit_callbacks
):
    readers(3)
    mailing = _announce_and_fan_out(Post(), django_capture_on_commit_callbacks)
    assert mailing.pause()
    with django_capture_on_commit_callbacks(execute=False):
        assert delivery.send_mailing_batch(mailing.pk, 0, MAX_ID) == 0
        assert delivery.resume(mailing)
        assert delivery.send_mailing_batch(mailing.pk, 0, MAX_ID) == 3
    assert len(smtp_server.messages) == 3


@pytest.mark.django_db
def test_repeated_hard_bounces_suppress_the_address(
    smtp_server, django_capture_on_commit_callbacks, settings
):
    settings.SUBSCRIPTIONS_HARD_BOUNCE_LIMIT = 2
    (bouncing,) = readers(1)
    smtp_server.refuse[bouncing.email] = [550, None]
    for _ in range(2):
        mailing = _announce_and_fan_out(Post(), django_capture_on_commit_callbacks)
        with django_capture_on_commit_callbacks(execute=False):
            delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    bouncing.refresh_from_db()
    assert bouncing.status == S.SUPPRESSED
    assert Mailing.objects.count() == 2


@pytest.mark.django_db
def test_the_sweeper_records_journaled_sends_and_releases_the_rest(
    smtp_server, django_capture_on_commit_callbacks, settings
):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from subscriptions import transports

    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 60
    sent_before_crash, unsent = readers(2)
    mailing = _announce_and_fan_out(Post(), django_capture_on_commit_callbacks)
    claimed = Delivery.objects.filter(mailing=mailing).claim(10)
    assert len(claimed) == 2
    # The worker sent one message, noted it, and died.
    from django.core.cache import cache

    cache.set(transports.journal_key("delivery", claimed[0].pk), 1)
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        with django_capture_on_commit_callbacks(execute=False):
            delivery.sweep()
    statuses = dict(
        Delivery.objects.filter(mailing=mailing).values_list("subscriber__email", "status")
    )
    assert statuses == {
        sent_before_crash.email: Delivery.Status.SENT,
        unsent.email: Delivery.Status.PENDING,
    }


@pytest.mark.django_db
def test_digests_over_two_weeks_carry_exactly_the_posts_waiting(
    smtp_server, django_capture_on_commit_callbacks, settings
):
    from datetime import datetime, timedelta

    import time_machine

    from subscriptions.models import Digest

    settings.SUBSCRIPTIONS_DIGEST_HOUR = 7
    settings.SUBSCRIPTIONS_DIGEST_WEEKDAY = 0  # Monday
    daily = make_subscriber("daily@example.com", frequency=F.DAILY)
    weekly = make_subscriber("weekly@example.com", frequency=F.WEEKLY)
    follower = make_subscriber("follower@example.com", frequency=F.DAILY, topics=["el-paso"])
    instant = make_subscriber("instant@example.com")
    monday = datetime(2026, 11, 30, tzinfo=UTC)
    # Day number → the posts published at 10:00 that day (True: about El Paso).
    schedule = {0: [True, False], 2: [False], 3: [True], 7: [False], 12: [True, False]}
    published = {}  # title → day

    def run_digests(moment):
        with time_machine.travel(moment, tick=False):
            with django_capture_on_commit_callbacks(execute=False):
                for _ in range(2):  # a second beat tick changes nothing
                    Digest.objects.create_due()
                    delivery.send_digest_batch(0, MAX_ID)

    got = {}  # (reader, day) → titles of the digest they got that day
    for day in range(15):
        for i, about_el_paso in enumerate(schedule.get(day, [])):
            title = f"Post {day}-{i}"
            published[title] = (day, about_el_paso)
            with time_machine.travel(monday + timedelta(days=day, hours=10, minutes=i), tick=False):
                _announce_and_fan_out(
                    Post(title=title, topics=["el-paso"] if about_el_paso else ["elsewhere"]),
                    django_capture_on_commit_callbacks,
                )
        smtp_server.clear()
        run_digests(monday + timedelta(days=day + 1, hours=7, minutes=30))
        for message in smtp_server.messages:
            text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
            titles = {t for t in published if f"\n{t}\n" in text}
            key = (message.envelope_recipients[0], day + 1)
            assert key not in got, f"two digests for {key}"
            got[key] = titles

    def expected(reader, only_el_paso=False, weekly=False):
        out = {}
        for title, (day, about_el_paso) in published.items():
            if only_el_paso and not about_el_paso:
                continue
            send_day = (day // 7 + 1) * 7 if weekly else day + 1
            out.setdefault((reader, send_day), set()).add(title)
        return out

    assert {k: v for k, v in got.items() if k[0] == daily.email} == expected(daily.email)
    assert {k: v for k, v in got.items() if k[0] == follower.email} == expected(
        follower.email, True
    )
    assert {k: v for k, v in got.items() if k[0] == weekly.email} == expected(
        weekly.email, weekly=True
    )
    assert not any(k[0] == instant.email for k in got)
    assert all(titles for titles in got.values())  # nobody gets an empty digest
    assert not Delivery.objects.filter(
        status=Delivery.Status.DIGEST, subscriber__in=[daily, follower]
    ).exists()


@worker
def test_the_pace_ceiling_holds_across_workers(celery_worker, smtp_server, start_worker_process):
    group = readers(100)
    celery_worker.stop()  # only the paced workers send
    try:
        for name in ("paced-1", "paced-2"):
            start_worker_process(name, SUBSCRIPTIONS_MAX_RATE="25", SUBSCRIPTIONS_BATCH_SIZE="20")
        mailing = subscriptions.announce(Post())
        wait_for_done(mailing, timeout=60)
    finally:
        celery_worker.start()
    assert received(smtp_server) == Counter({r.email: 1 for r in group})
    # 100 messages at 25 a second, shared by two workers: at least four
    # distinct seconds (unpaced, they all arrive within one).
    seconds = Counter(int(m.received_at) for m in smtp_server.messages)
    assert len(seconds) >= 4
    # Counted by the senders' clock, received by the server's: a message
    # may land just after its second, hence the small slack.
    assert max(seconds.values()) <= 25 + 3


@pytest.mark.django_db
def test_the_sweeper_requeues_a_mailing_whose_fan_out_was_lost(
    settings, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 60
    readers(2)
    with django_capture_on_commit_callbacks(execute=False):
        mailing, _ = delivery.announce(Post())  # its fan-out task never runs
    assert mailing.status == Mailing.Status.QUEUED
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        with django_capture_on_commit_callbacks(execute=False) as queued:
            assert delivery.sweep() == [mailing.pk]
    assert len(queued) == 2  # the fan-out and a batch, queued again


@pytest.mark.django_db
def test_a_live_claim_is_left_alone_and_a_released_row_is_not_overwritten(
    settings, django_capture_on_commit_callbacks
):
    from subscriptions import transports

    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 60
    readers(2)
    mailing = _announce_and_fan_out(Post(), django_capture_on_commit_callbacks)
    claimed = Delivery.objects.filter(mailing=mailing).claim(10)
    with django_capture_on_commit_callbacks(execute=False):
        delivery.sweep()  # the claim is fresh: not the sweeper's
    assert Delivery.objects.filter(status=Delivery.Status.SENDING).count() == 2
    # The sweeper takes one row back and another batch sends it...
    Delivery.objects.filter(pk=claimed[0].pk).update(status=Delivery.Status.SENT, claim="")
    # ...so the first batch's late outcome for it must change nothing.
    outcome = transports.Outcome(retry=[claimed[0]], sent=[claimed[1]])
    Delivery.objects.record(outcome, claimed[0].claim)
    statuses = list(Delivery.objects.order_by("pk").values_list("status", flat=True))
    assert statuses == [Delivery.Status.SENT, Delivery.Status.SENT]


@pytest.mark.django_db
def test_unpublishing_withdraws_the_post_from_waiting_digests(
    smtp_server, django_capture_on_commit_callbacks
):
    from subscriptions.models import Digest

    post = Post(title="Pulled story")
    daily = make_subscriber("daily@example.com", frequency=F.DAILY)
    instant = make_subscriber("instant@example.com")
    mailing = _announce_and_fan_out(post, django_capture_on_commit_callbacks)
    subscriptions.withdraw(post)
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.PAUSED
    with django_capture_on_commit_callbacks(execute=False):
        assert delivery.send_mailing_batch(mailing.pk, 0, MAX_ID) == 0
    assert Delivery.objects.get(subscriber=instant).status == Delivery.Status.PENDING
    assert Delivery.objects.get(subscriber=daily).status == Delivery.Status.SKIPPED
    assert smtp_server.messages == []
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    with time_machine.travel(timezone.now() + timedelta(days=1, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()
    assert Digest.objects.count() == 0


@pytest.mark.django_db
def test_a_refused_digest_counts_as_one_refusal(
    smtp_server, django_capture_on_commit_callbacks, settings
):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from subscriptions.models import Digest

    settings.SUBSCRIPTIONS_HARD_BOUNCE_LIMIT = 2
    daily = make_subscriber("daily@example.com", frequency=F.DAILY)
    smtp_server.refuse[daily.email] = [550, None]
    for title in ("One", "Two", "Three"):
        _announce_and_fan_out(Post(title=title), django_capture_on_commit_callbacks)
    with time_machine.travel(timezone.now() + timedelta(days=1, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()
            delivery.send_digest_batch(0, MAX_ID)
    daily.refresh_from_db()
    assert daily.status == S.CONFIRMED  # one refused message, not three
    assert Digest.objects.get().status == Digest.Status.FAILED
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.FAILED}


@pytest.mark.django_db
def test_a_reader_who_comes_back_gets_no_digest_of_posts_from_before(
    smtp_server, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from subscriptions.models import Digest

    start = timezone.now()
    daily = make_subscriber("daily@example.com", frequency=F.DAILY, confirmed_at=start)
    _announce_and_fan_out(Post(title="While subscribed"), django_capture_on_commit_callbacks)
    daily.unsubscribe()
    with time_machine.travel(start + timedelta(hours=1)):
        Subscriber.objects.filter(pk=daily.pk).update(
            status=S.CONFIRMED, confirmed_at=timezone.now()
        )
    with time_machine.travel(start + timedelta(days=1, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()
    assert Digest.objects.count() == 0


def test_long_lines_are_cut_by_bytes_for_smtp():
    from subscriptions.emails import _short_lines

    for text in ("字" * 2000, " ".join(["字字字"] * 400), "x" * 3000):
        lines = _short_lines(text).splitlines()
        assert all(len(line.encode()) <= 900 for line in lines)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def queued_task_names(redis_url):
    """The tasks waiting in Celery's default queue on Redis, in the order a
    worker takes them: by priority (kombu keeps one list per priority step,
    0 first), oldest first within one."""
    import json

    import redis

    client = redis.Redis.from_url(f"{redis_url}/0")
    lists = ["celery"] + [f"celery\x06\x16{step}" for step in (3, 6, 9)]
    return [
        json.loads(m)["headers"]["task"]
        for key in lists
        for m in reversed(client.lrange(key, 0, -1))
    ]


@pytest.mark.django_db
def test_the_fan_out_task_queues_each_chunks_batch_before_going_on(
    settings, django_capture_on_commit_callbacks, redis_server
):
    from celery import current_app

    settings.SUBSCRIPTIONS_BATCH_SIZE = 2
    readers(5)
    with django_capture_on_commit_callbacks(execute=False):
        mailing, _ = delivery.announce(Post())
    current_app.control.purge()
    rounds = 0
    while not mailing.fanout_done:
        with django_capture_on_commit_callbacks(execute=True):
            delivery.fan_out(mailing.pk, chunks=1)
        mailing.refresh_from_db()
        rounds += 1
    assert rounds == 4  # three chunks of at most two readers, then the end
    assert (
        queued_task_names(redis_server)
        == [
            "subscriptions.tasks.send_mailing_batch",
            "subscriptions.tasks.fan_out",
        ]
        * 3
    )
    assert Delivery.objects.filter(mailing=mailing).count() == 5
    current_app.control.purge()


@pytest.mark.django_db
def test_a_withdrawn_post_leaves_a_digest_already_made(
    smtp_server, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from subscriptions.models import Digest

    daily = make_subscriber("daily@example.com", frequency=F.DAILY)
    pulled, kept = Post(title="Pulled story"), Post(title="Kept story")
    for post in (pulled, kept):
        _announce_and_fan_out(post, django_capture_on_commit_callbacks)
    with time_machine.travel(timezone.now() + timedelta(days=1, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()  # the digest is made, not yet sent
            subscriptions.withdraw(pulled)
            delivery.send_digest_batch(0, MAX_ID)
    (message,) = smtp_server.wait_for(1)
    text = message.get_body(("plain",)).get_content()
    assert "Kept story" in text and "Pulled story" not in text
    assert message.envelope_recipients == [daily.email]


@pytest.mark.django_db
def test_claimed_rows_are_what_django_would_load_in_two_queries(django_capture_on_commit_callbacks):
    """claim() builds its rows from one values_list() query rather than
    through Model.__init__ (SendableQuerySet._with_readers): each must be
    what select_related() would give, field for field, its reader loaded
    with it, and a field it did not load still readable (deferred)."""
    readers(3)
    gone = make_subscriber("gone@example.com")
    mailing = _announce_and_fan_out(Post(), django_capture_on_commit_callbacks)
    Delivery.objects.filter(subscriber=gone).update(attempts=2, error="451 later")
    gone.delete()  # the row stays, its reader erased: subscriber is None
    with CaptureQueriesContext(connection) as claim_queries:
        claimed = Delivery.objects.filter(mailing=mailing).claim(10)
    assert len(claim_queries) == 2  # the conditional update, then the rows
    expected = Delivery.objects.filter(pk__in=[i.pk for i in claimed]).select_related("subscriber")
    expected = {i.pk: i for i in expected}
    assert [i.pk for i in claimed] == sorted(expected)
    subscriber_fields = ["id", "email", "name", "status", "key", "follows_everything"]
    subscriber_fields += ["stats_opt_out"]
    with CaptureQueriesContext(connection) as reading:
        for item in claimed:
            want = expected[item.pk]
            for name in ["attempts", "error", "claim", "claimed_at", "status", "ambiguous"]:
                assert getattr(item, name) == getattr(want, name), name
            assert item.mailing_id == mailing.pk and not item._state.adding
            if want.subscriber is None:
                assert item.subscriber is None and item.attempts == 2
            else:
                for name in subscriber_fields:
                    assert getattr(item.subscriber, name) == getattr(want.subscriber, name)
    assert len(reading) == 0  # everything a batch reads came with the claim
    assert sum(i.subscriber is None for i in claimed) == 1
    # A field left out of the claim (a date no batch reads) loads on use.
    first = next(i for i in claimed if i.subscriber)
    assert first.created_at == expected[first.pk].created_at
    assert first.subscriber.created_at == expected[first.pk].subscriber.created_at
    # And the rows save as model instances do: record() bulk-updates them.
    first.attempts, first.error = 1, "later"
    Delivery.objects.bulk_update([first], ["attempts", "error"])
    assert Delivery.objects.get(pk=first.pk).error == "later"


@pytest.mark.django_db
def test_a_batch_sent_whole_is_recorded_in_one_update_and_only_then(
    django_capture_on_commit_callbacks,
):
    from subscriptions import transports

    readers(3)
    mailing = _announce_and_fan_out(Post(), django_capture_on_commit_callbacks)
    claimed = Delivery.objects.filter(mailing=mailing).claim(10)
    # An outcome that leaves a claimed row out is never taken for "all sent".
    Delivery.objects.record(transports.Outcome(sent=claimed[:2]), claimed[0].claim, claimed=3)
    statuses = list(Delivery.objects.order_by("pk").values_list("status", flat=True))
    assert statuses == [Delivery.Status.SENT, Delivery.Status.SENT, Delivery.Status.SENDING]
    Delivery.objects.filter(pk=claimed[2].pk).update(status=Delivery.Status.PENDING, claim="")
    claimed = Delivery.objects.filter(mailing=mailing).claim(10)
    assert len(claimed) == 1
    # ...and every row sent: one UPDATE by the claim, no list of ids.
    with CaptureQueriesContext(connection) as queries:
        Delivery.objects.record(transports.Outcome(sent=claimed), claimed[0].claim, claimed=1)
    (update,) = queries.captured_queries
    assert " IN " not in update["sql"].upper()
    assert Delivery.objects.filter(status=Delivery.Status.SENT).count() == 3
