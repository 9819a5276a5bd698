"""What a live site meets after launch (issue 9): each test here failed on
the code before its fix."""

from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from subscriptions import delivery
from subscriptions.models import MAX_ID, Delivery, Digest, Mailing, Subscriber
from tests.factories import make_subscriber
from tests.subscriptions.test_delivery import Post, readers, received, wait_for_done
from tests.support import wait_until

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


# One refused reader never holds up a batch.


def _send_all(post, capture):
    mailing, _ = delivery.announce(post)
    with capture(execute=False):
        delivery.fan_out(mailing.pk)
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    return mailing


def _rows(mailing):
    return {
        d.subscriber.email.split("@")[0]: d
        for d in Delivery.objects.filter(mailing=mailing).select_related("subscriber")
    }


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["mailgun", "postmark"])
def test_a_provider_refusing_readers_holds_up_nobody_else(
    name, provider, settings, django_capture_on_commit_callbacks
):
    from tests.providers import anymail_settings

    # One API call per reader (test_batch.py has the same troubles in batch calls).
    settings.SUBSCRIPTIONS_RECIPIENTS_PER_CALL = 1

    settings.EMAIL_BACKEND, settings.ANYMAIL = anymail_settings(provider, name, timeout=1)
    for who in ("ok1", "invalid", "broken", "ok2", "hanging", "garbled", "ok3"):
        make_subscriber(f"{who}@example.com")
    provider.invalid.add("invalid@example.com")
    provider.broken["broken@example.com"] = 1
    provider.hanging.add("hanging@example.com")
    provider.garbled.add("garbled@example.com")

    mailing = _send_all(Post(), django_capture_on_commit_callbacks)

    assert provider.recipients() == Counter(
        {f"{who}@example.com": 1 for who in ("ok1", "ok2", "garbled", "ok3")}
    )
    rows = _rows(mailing)
    assert {who: d.status for who, d in rows.items()} == {
        "ok1": Delivery.Status.SENT,
        "ok2": Delivery.Status.SENT,
        "ok3": Delivery.Status.SENT,
        "garbled": Delivery.Status.SENT,  # a 200 we could not read: it went out
        "invalid": Delivery.Status.FAILED,
        "broken": Delivery.Status.PENDING,
        "hanging": Delivery.Status.PENDING,
    }
    assert rows["invalid"].permanent
    assert Subscriber.objects.get(email="invalid@example.com").status == S.SUPPRESSED
    for who in ("broken", "hanging"):
        assert rows[who].next_attempt_at and rows[who].attempts == 1 and not rows[who].permanent
        assert Subscriber.objects.get(email=f"{who}@example.com").status == S.CONFIRMED
    assert "500" in rows["broken"].error and "no answer" in rows["hanging"].error
    assert rows["hanging"].ambiguous and rows["garbled"].ambiguous  # the call may have gone through
    assert not rows["broken"].ambiguous and not rows["ok1"].ambiguous
    assert "example.com" not in rows["invalid"].error + rows["hanging"].error


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["mailgun", "postmark"])
def test_a_provider_asking_to_slow_down_holds_the_batch_without_spending_attempts(
    name, provider, settings, django_capture_on_commit_callbacks
):
    from tests.providers import anymail_settings

    # One API call per reader (test_batch.py has the same troubles in batch calls).
    settings.SUBSCRIPTIONS_RECIPIENTS_PER_CALL = 1

    settings.EMAIL_BACKEND, settings.ANYMAIL = anymail_settings(provider, name)
    for who in ("first", "throttled", "third", "fourth"):
        make_subscriber(f"{who}@example.com")
    provider.throttled["throttled@example.com"] = 1
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    rows = _rows(mailing)
    assert provider.recipients() == Counter({"first@example.com": 1})
    assert provider.calls[name] == 2  # no call after the 429
    for who in ("throttled", "third", "fourth"):
        row = rows[who]
        assert (row.status, row.attempts, row.permanent) == (Delivery.Status.PENDING, 0, False)
        assert row.error.startswith("held: 429") and row.next_attempt_at > timezone.now()


@pytest.mark.django_db
def test_an_inactive_address_at_the_provider_is_refused_and_suppressed(
    provider, settings, django_capture_on_commit_callbacks
):
    """Postmark answers 422 ErrorCode 406; django-anymail raises
    AnymailRecipientsRefused, which is no OSError or SMTP error."""
    from tests.providers import anymail_settings

    settings.EMAIL_BACKEND, settings.ANYMAIL = anymail_settings(provider, "postmark")
    make_subscriber("bounced@example.com")
    make_subscriber("fine@example.com")
    provider.inactive.add("bounced@example.com")
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    rows = _rows(mailing)
    assert rows["bounced"].status == Delivery.Status.FAILED and rows["bounced"].permanent
    assert rows["fine"].status == Delivery.Status.SENT
    assert provider.recipients() == Counter({"fine@example.com": 1})
    assert Subscriber.objects.get(email="bounced@example.com").status == S.SUPPRESSED
    assert not Delivery.objects.filter(status=Delivery.Status.SENDING).exists()


@pytest.mark.django_db
def test_wrong_credentials_hold_every_batch_and_fail_or_suppress_nobody(
    provider, settings, django_capture_on_commit_callbacks
):
    from tests.providers import anymail_settings

    settings.EMAIL_BACKEND, anymail = anymail_settings(provider, "mailgun")
    settings.ANYMAIL = {**anymail, "MAILGUN_API_KEY": "key-wrong"}
    settings.SUBSCRIPTIONS_MAX_ATTEMPTS = 3
    for i in range(3):
        make_subscriber(f"r{i}@example.com")
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    for _ in range(5):  # longer than MAX_ATTEMPTS would allow a reader
        Delivery.objects.update(next_attempt_at=None)
        with django_capture_on_commit_callbacks(execute=False):
            delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    rows = _rows(mailing).values()
    assert {(d.status, d.attempts, d.permanent) for d in rows} == {
        (Delivery.Status.PENDING, 0, False)
    }
    assert all(d.error.startswith("held: 401") for d in rows)
    assert provider.calls["mailgun"] == 6  # one call per try, then the batch waits
    assert set(Subscriber.objects.values_list("status", flat=True)) == {S.CONFIRMED}


@pytest.mark.django_db
def test_a_held_mailing_says_why_and_since_when_and_goes_on_once_fixed(
    provider, settings, django_capture_on_commit_callbacks, admin_client, caplog
):
    """An outage or a wrong key holds every batch without failing anyone:
    the editor must see it on the mailing, and the error log hear of it
    once, not at every try."""
    from tests.providers import anymail_settings

    settings.EMAIL_BACKEND, anymail = anymail_settings(provider, "mailgun")
    settings.ANYMAIL = anymail
    for i in range(3):
        make_subscriber(f"r{i}@example.com")
    fine = _send_all(Post(title="Sent before"), django_capture_on_commit_callbacks)
    assert Mailing.objects.get(pk=fine.pk).held_since is None
    settings.ANYMAIL = {**anymail, "MAILGUN_API_KEY": "key-wrong"}
    mailing = _send_all(Post(title="Breaking"), django_capture_on_commit_callbacks)
    mailing.refresh_from_db()
    since = mailing.held_since
    assert mailing.held and since is not None
    assert mailing.held_reason.startswith("401")
    for _ in range(2):  # tried again: the same hold, since the same moment
        Delivery.objects.update(next_attempt_at=None)
        with django_capture_on_commit_callbacks(execute=False):
            delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    mailing.refresh_from_db()
    assert (mailing.held_since, mailing.held) == (since, True)
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "is held" in r.message]
    assert len(errors) == 1 and "Breaking" in errors[0].message

    pages = {
        "list": "/admin/subscriptions/mailing/",
        "page": f"/admin/subscriptions/mailing/{mailing.pk}/change/",
        "dashboard": "/admin/",
    }
    for name, url in pages.items():
        html = admin_client.get(url).content.decode()
        assert html.count("Held since") == 1, name  # the held one, not the one sent before
        assert "401" in html, name

    settings.ANYMAIL = anymail  # the key is fixed: the next try sends
    Delivery.objects.update(next_attempt_at=None)
    with django_capture_on_commit_callbacks(execute=False):
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    mailing.refresh_from_db()
    assert (mailing.held_since, mailing.held_reason) == (None, "")
    assert mailing.status == Mailing.Status.DONE
    assert provider.recipients() == Counter({f"r{i}@example.com": 2 for i in range(3)})
    for name, url in pages.items():
        assert "Held since" not in admin_client.get(url).content.decode(), name


@pytest.mark.django_db
@pytest.mark.parametrize("connections", [1, 4])
def test_a_relay_refusing_our_sender_suppresses_nobody(
    smtp_server, settings, django_capture_on_commit_callbacks, connections
):
    """A 554 5.7.1 for every recipient (relay access denied) is the
    configuration's fault: after BREAKER readers in a row the batch is
    held; nobody's address is counted as refused. When the fifth refusal
    comes, the messages in flight (a window of 2 on each connection here)
    may have gone too."""
    settings.SUBSCRIPTIONS_SMTP_CONNECTIONS = connections
    settings.SUBSCRIPTIONS_SMTP_WINDOW = 2
    settings.SUBSCRIPTIONS_HARD_BOUNCE_LIMIT = 1
    group = [make_subscriber(f"r{i}@example.com") for i in range(20)]
    for reader in group:
        smtp_server.refuse[reader.email] = [554, None]
    for title in ("One", "Two"):
        mailing = _send_all(Post(title=title), django_capture_on_commit_callbacks)
        rows = _rows(mailing).values()
        assert {(d.status, d.attempts, d.permanent) for d in rows} == {
            (Delivery.Status.PENDING, 0, False)
        }
    # Five tries per batch (and those in flight then), then it waits.
    assert 2 * 5 <= len(smtp_server.refused) <= 2 * (5 - 1 + connections * 2)
    assert set(Subscriber.objects.values_list("status", flat=True)) == {S.CONFIRMED}


@pytest.mark.django_db
def test_a_refused_mailbox_still_fails_alone_however_many_in_a_row(
    smtp_server, settings, django_capture_on_commit_callbacks
):
    group = [make_subscriber(f"r{i}@example.com") for i in range(7)]
    for reader in group[:6]:
        smtp_server.refuse[reader.email] = [550, None]  # no such mailbox
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    rows = _rows(mailing)
    assert sum(d.status == Delivery.Status.FAILED and d.permanent for d in rows.values()) == 6
    assert rows["r6"].status == Delivery.Status.SENT


@pytest.mark.django_db
def test_a_cache_outage_in_the_pace_is_recorded_on_the_readers(
    smtp_server, settings, django_capture_on_commit_callbacks
):
    from tests.support import free_port

    settings.CACHES = {
        **settings.CACHES,
        "down": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5},
        },
    }
    settings.SUBSCRIPTIONS_CACHE = "down"
    settings.SUBSCRIPTIONS_MAX_RATE = 100
    for i in range(3):
        make_subscriber(f"r{i}@example.com")
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    rows = _rows(mailing).values()
    assert {(d.status, d.attempts) for d in rows} == {(Delivery.Status.PENDING, 1)}
    assert all(d.next_attempt_at for d in rows)
    assert smtp_server.messages == []


# Nothing waits for ever.


class HungSMTPServer:
    """Greets, answers EHLO, then never answers again: a mail server that hangs."""

    def __init__(self):
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.connections = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        import threading

        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self.talk, args=(connection,), daemon=True).start()

    def talk(self, connection):
        try:
            connection.sendall(b"220 hung.example ESMTP\r\n")
            reader = connection.makefile("rb")
            for line in reader:
                if line.upper().startswith((b"EHLO", b"HELO")):
                    connection.sendall(b"250 hung.example\r\n")
                else:
                    self.stop.wait()  # and never answer
                    return
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def hung_smtp(settings):
    server = HungSMTPServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    yield server
    server.close()


@pytest.mark.django_db
@pytest.mark.timeout(60)
def test_a_hung_mail_server_fails_the_attempt_after_the_email_timeout(
    hung_smtp, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_TIMEOUT = 1
    make_subscriber("one@example.com")
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    (row,) = _rows(mailing).values()
    assert (row.status, row.attempts) == (Delivery.Status.PENDING, 1)
    assert "timed out" in row.error


@pytest.mark.django_db
@pytest.mark.timeout(60)
def test_a_batch_never_outlives_its_claim_even_inside_one_send(
    hung_smtp, settings, django_capture_on_commit_callbacks
):
    """No EMAIL_TIMEOUT at all: the claim's deadline still ends the send
    (before, the worker waited on the socket for ever)."""
    settings.EMAIL_TIMEOUT = None
    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 3
    make_subscriber("one@example.com")
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    (row,) = _rows(mailing).values()
    assert (row.status, row.attempts) == (Delivery.Status.PENDING, 1)
    assert "timed out" in row.error


def test_email_timeout_is_read_from_the_environment():
    import subprocess
    import sys

    def email_timeout(**env):
        code = "from django.conf import settings; print(settings.EMAIL_TIMEOUT)"
        result = subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); {code}"],
            env={"DJANGO_SETTINGS_MODULE": "newsroom.settings", "SECRET_KEY": "x", **env},
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    assert email_timeout() == "30.0"
    assert email_timeout(EMAIL_URL="smtp://127.0.0.1:1025?timeout=7") == "7.0"
    assert email_timeout(EMAIL_TIMEOUT="12", EMAIL_URL="smtp://127.0.0.1:1025") == "12.0"


# A reader who erases themselves mid-mailing does not wedge it.

worker = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.mark.django_db
def test_erasure_skips_what_was_not_sent_so_the_mailing_finishes(
    smtp_server, django_capture_on_commit_callbacks
):
    stays = make_subscriber("stays@example.com")
    leaves = make_subscriber("leaves@example.com")
    mailing, _ = delivery.announce(Post())
    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
    leaves.erase()
    with django_capture_on_commit_callbacks(execute=False):
        assert delivery.send_mailing_batch(mailing.pk, 0, MAX_ID) == 1
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE
    assert received(smtp_server) == Counter({stays.email: 1})
    statuses = Counter(Delivery.objects.filter(mailing=mailing).values_list("status", flat=True))
    assert statuses == {Delivery.Status.SENT: 1, Delivery.Status.SKIPPED: 1}


@pytest.mark.django_db
def test_erasure_finishes_a_mailing_that_waited_only_for_the_erased_reader(
    smtp_server, django_capture_on_commit_callbacks
):
    make_subscriber("stays@example.com")
    leaves = make_subscriber("leaves@example.com")
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    # Its delivery was claimed (a batch in flight) when the reader left.
    Delivery.objects.filter(subscriber=leaves).update(status=Delivery.Status.SENDING)
    Mailing.objects.filter(pk=mailing.pk).update(status=Mailing.Status.SENDING)
    leaves.erase()
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE


@pytest.mark.django_db
def test_erasure_removes_the_address_from_every_error_text(
    smtp_server, django_capture_on_commit_callbacks, settings
):
    from tests.subscriptions.test_erasure import tables_holding

    settings.SUBSCRIPTIONS_HARD_BOUNCE_LIMIT = 99
    reader = make_subscriber("Refused.Reader@example.com", frequency=F.DAILY)
    smtp_server.refuse[reader.email] = [550, None]
    _send_all(Post(title="One"), django_capture_on_commit_callbacks)
    Subscriber.objects.filter(pk=reader.pk).update(frequency=F.INSTANT)
    _send_all(Post(title="Two"), django_capture_on_commit_callbacks)
    Subscriber.objects.filter(pk=reader.pk).update(frequency=F.DAILY)
    with time_machine.travel(timezone.now() + timedelta(days=1, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()
            delivery.send_digest_batch(0, MAX_ID)
    _send_all(Post(title="Three"), django_capture_on_commit_callbacks)  # waits for a digest
    assert Digest.objects.filter(status=Digest.Status.FAILED).exists()
    assert Delivery.objects.filter(status=Delivery.Status.DIGEST).exists()
    # The server echoed the address; the rows keep "<recipient>" instead.
    assert tables_holding("refused.reader") == ["subscriptions_subscriber"]
    assert Delivery.objects.filter(error__contains="<recipient>").exists()
    # Rows written before that rule still hold it.
    echo = f"550 <{reader.email}>: No such mailbox"
    Delivery.objects.filter(subscriber=reader, status=Delivery.Status.FAILED).update(error=echo)
    Digest.objects.filter(subscriber=reader).update(error=echo.upper())
    assert "subscriptions_delivery" in tables_holding("refused.reader")
    assert "subscriptions_digest" in tables_holding("refused.reader")

    reader.erase()
    assert tables_holding("refused.reader") == []
    assert Delivery.objects.filter(error__contains="[erased]").exists()
    assert not Delivery.objects.filter(status=Delivery.Status.DIGEST).exists()


@worker
def test_a_reader_erased_mid_batch_is_sent_nothing_more(
    celery_worker, smtp_server, start_worker_process
):
    # A slow server (a quarter of a second a message) and a window of 4 on
    # each of the worker's 4 connections: each send_many call takes 16
    # readers (the server's pace allows no more in half a second), the batch
    # re-checks its readers between calls, and it takes about 6 s.
    group = readers(100)
    smtp_server.delay = 0.25
    celery_worker.stop()
    try:
        start_worker_process("small-window", SUBSCRIPTIONS_SMTP_WINDOW="4")
        mailing = delivery.announce(Post())[0]
        wait_until(lambda: len(smtp_server.messages) >= 2, timeout=60, message="sending to start")
        last = group[-1]
        assert Delivery.objects.get(subscriber=last).status == Delivery.Status.SENDING  # claimed
        last.erase()  # the server stays slow: the batch has over 90 messages to go
        wait_for_done(mailing)
    finally:
        celery_worker.start()
    celery_worker.drain()
    assert last.email not in received(smtp_server)
    assert received(smtp_server) == Counter({r.email: 1 for r in group[:-1]})


# The audience is fixed when the post goes live.


@pytest.mark.django_db
def test_a_fan_out_that_runs_late_goes_to_the_readers_confirmed_when_the_post_went_live(
    smtp_server, django_capture_on_commit_callbacks
):
    start = timezone.now()
    before = make_subscriber("before@example.com", confirmed_at=start)
    daily_before = make_subscriber("daily@example.com", frequency=F.DAILY, confirmed_at=start)
    with time_machine.travel(start + timedelta(seconds=1)):
        with django_capture_on_commit_callbacks(execute=False):  # the broker is down
            mailing, _ = delivery.announce(Post(title="Went live"))
    with time_machine.travel(start + timedelta(minutes=5)):
        late = make_subscriber("late@example.com", confirmed_at=timezone.now())
        make_subscriber("late-daily@example.com", frequency=F.DAILY, confirmed_at=timezone.now())
        with django_capture_on_commit_callbacks(execute=False):
            delivery.fan_out(mailing.pk)
            delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    with time_machine.travel(start + timedelta(days=1, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()
            delivery.send_digest_batch(0, MAX_ID)
    assert received(smtp_server) == Counter({before.email: 1, daily_before.email: 1})
    assert late.email not in received(smtp_server)
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE


# Bounded memory and work.


@pytest.mark.django_db
def test_a_digest_batch_loads_each_post_once_without_its_snapshot(
    django_capture_on_commit_callbacks,
):
    readers_ = [make_subscriber(f"w{i}@example.com", frequency=F.WEEKLY) for i in range(5)]
    for i in range(4):
        mailing, _ = delivery.announce(Post(title=f"Post {i}"))
        with django_capture_on_commit_callbacks(execute=False):
            delivery.fan_out(mailing.pk)
    with time_machine.travel(timezone.now() + timedelta(days=8)):
        Digest.objects.create_due()
    digests = list(Digest.objects.all())
    assert len(digests) == len(readers_)
    posts, listed = Digest.objects.posts_of(digests)
    loaded = [m for ms in posts.values() for m in ms]
    assert len(loaded) == 20 and sum(len(v) for v in listed.values()) == 20
    assert len({id(m) for m in loaded}) == 4  # one object per post, shared
    assert all(m.get_deferred_fields() >= {"text", "html", "subject"} for m in loaded)


@pytest.mark.django_db
def test_the_sweeper_starts_no_new_chain_while_deliveries_wait_out_a_backoff(
    smtp_server, settings, django_capture_on_commit_callbacks
):
    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 60
    reader = make_subscriber("flaky@example.com")
    smtp_server.refuse[reader.email] = [451, None]
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    (row,) = _rows(mailing).values()
    Delivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    for minutes in (2, 8, 14):  # beat ticks while the retry waits
        with time_machine.travel(timezone.now() + timedelta(minutes=minutes)):
            with django_capture_on_commit_callbacks(execute=False) as queued:
                assert delivery.sweep() == []
            assert queued == []
    with time_machine.travel(timezone.now() + timedelta(hours=1, minutes=2)):
        with django_capture_on_commit_callbacks(execute=False) as queued:
            assert delivery.sweep() == [mailing.pk]  # due now, and its task was lost
        assert len(queued) == 1


def test_retry_countdowns_stay_under_the_brokers_visibility_timeout(settings):
    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 300
    soon = timezone.now() + timedelta(seconds=20)
    assert 19 < delivery.retry_countdown(soon) <= 20.2
    assert delivery.retry_countdown(timezone.now() + timedelta(hours=2)) == 300
    assert 300 < settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]


# Exactly-once in the corners.


@pytest.mark.django_db
def test_a_digest_the_journal_says_was_sent_takes_its_deliveries_with_it(
    smtp_server, settings, django_capture_on_commit_callbacks
):
    from django.core.cache import cache

    from subscriptions import transports

    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 60
    make_subscriber("daily@example.com", frequency=F.DAILY)
    for title in ("One", "Two"):
        _send_all(Post(title=title), django_capture_on_commit_callbacks)
    later = timezone.now() + timedelta(days=1, hours=8)
    with time_machine.travel(later):
        Digest.objects.create_due()
        (digest,) = Digest.objects.all().claim(10)  # a worker claims it...
        cache.set(transports.journal_key("digest", digest.pk), 1)  # ...sends, notes it, dies
    with time_machine.travel(later + timedelta(seconds=61)):
        with django_capture_on_commit_callbacks(execute=False):
            delivery.sweep()
    digest.refresh_from_db()
    assert digest.status == Digest.Status.SENT
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.SENT}


@pytest.mark.django_db
def test_a_post_attached_to_a_digest_while_it_is_sent_waits_for_the_next_one(
    smtp_server, django_capture_on_commit_callbacks
):
    """The interleaving PostgreSQL allows: create_due attaches a post to a
    pending digest in the moment between another worker's claim of it and
    its listing. Played here step by step, as the two workers would."""
    from subscriptions import emails, transports

    reader = make_subscriber("daily@example.com", frequency=F.DAILY)
    start = timezone.now()
    _send_all(Post(title="Listed"), django_capture_on_commit_callbacks)
    with time_machine.travel(start + timedelta(days=1, hours=8)):
        Digest.objects.create_due()
        rows = Digest.objects.all()
        (digest,) = rows.claim(10)  # worker A claims...
        posts, listed = Digest.objects.posts_of([digest])  # ...and lists
        late = _send_all(Post(title="Late"), django_capture_on_commit_callbacks)
        Delivery.objects.filter(mailing=late).update(digest=digest)  # worker B attaches
        outcome = transports.deliver("digest", [digest], emails.digest(posts))
        Digest.objects.record(outcome, digest.claim)
        Digest.objects.record_listed(outcome, listed)
    late_row = Delivery.objects.get(mailing=late)
    assert (late_row.status, late_row.digest_id) == (Delivery.Status.DIGEST, None)
    smtp_server.clear()
    with time_machine.travel(start + timedelta(days=2, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()
            delivery.send_digest_batch(0, MAX_ID)
    (message,) = smtp_server.wait_for(1)
    assert message.envelope_recipients == [reader.email]
    assert "Late" in message.get_body(("plain",)).get_content()


class DropAfterDataServer(HungSMTPServer):
    """Takes the whole message, then hangs up without answering — once per
    connection for the addresses in `drop`; answers 250 otherwise."""

    def __init__(self, drop):
        self.drop = set(drop)
        self.accepted = []
        super().__init__()

    def talk(self, connection):
        try:
            connection.sendall(b"220 flaky.example ESMTP\r\n")
            reader = connection.makefile("rb")
            rcpt = None
            for line in reader:
                command = line.upper()
                if command.startswith((b"EHLO", b"HELO")):
                    connection.sendall(b"250 flaky.example\r\n")
                elif command.startswith(b"RCPT"):
                    rcpt = line.decode().split("<", 1)[1].split(">", 1)[0]
                    connection.sendall(b"250 OK\r\n")
                elif command.startswith(b"DATA"):
                    connection.sendall(b"354 go ahead\r\n")
                    for body_line in reader:
                        if body_line == b".\r\n":
                            break
                    if rcpt in self.drop:
                        self.drop.discard(rcpt)
                        connection.close()  # accepted, maybe: the answer never comes
                        return
                    self.accepted.append(rcpt)
                    connection.sendall(b"250 queued\r\n")
                elif command.startswith(b"QUIT"):
                    connection.sendall(b"221 bye\r\n")
                    return
                else:
                    connection.sendall(b"250 OK\r\n")
        except OSError:
            pass


@pytest.mark.django_db
@pytest.mark.timeout(60)
def test_a_connection_lost_after_data_is_counted_as_ambiguous_and_retried(
    settings, django_capture_on_commit_callbacks, admin_client
):
    server = DropAfterDataServer(drop=["dropped@example.com"])
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.SUBSCRIPTIONS_RETRY_BACKOFF = 0
        for who in ("first", "dropped", "last"):
            make_subscriber(f"{who}@example.com")
        mailing = _send_all(Post(), django_capture_on_commit_callbacks)
        rows = _rows(mailing)
        assert rows["dropped"].status == Delivery.Status.PENDING and rows["dropped"].ambiguous
        assert rows["dropped"].error.startswith("ambiguous")
        assert not rows["first"].ambiguous and not rows["last"].ambiguous
        assert sorted(server.accepted) == ["first@example.com", "last@example.com"]  # any order
        with django_capture_on_commit_callbacks(execute=False):
            delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)  # the retry
        rows = _rows(mailing)
        assert rows["dropped"].status == Delivery.Status.SENT and rows["dropped"].ambiguous
        page = admin_client.get(f"/admin/subscriptions/mailing/{mailing.pk}/change/")
        assert b"1 ambiguous" in page.content
    finally:
        server.close()


class SlowSMTPServer(HungSMTPServer):
    """Answers every command, after `delay` seconds each: slow, not hung."""

    def __init__(self, delay):
        self.delay, self.accepted = delay, []
        super().__init__()

    def talk(self, connection):
        import time

        def say(text):
            time.sleep(self.delay)
            connection.sendall(text)

        try:
            say(b"220 slow.example ESMTP\r\n")
            reader = connection.makefile("rb")
            for line in reader:
                command = line.upper()
                if command.startswith(b"DATA"):
                    say(b"354 go ahead\r\n")
                    for body_line in reader:
                        if body_line == b".\r\n":
                            break
                    say(b"250 queued\r\n")
                    self.accepted.append(time.monotonic())
                elif command.startswith(b"QUIT"):
                    connection.sendall(b"221 bye\r\n")
                    return
                else:
                    say(b"250 OK\r\n")
        except OSError:
            pass


@pytest.mark.django_db
@pytest.mark.timeout(60)
def test_a_slow_server_cannot_stretch_one_send_past_the_claim(
    settings, django_capture_on_commit_callbacks
):
    """Each reply within its timeout, but the whole send (MAIL, RCPT, DATA,
    the body, the answer) would end past the claim: it is cut at the
    deadline, not accepted behind the sweeper's back."""
    server = SlowSMTPServer(delay=1.0)
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_TIMEOUT = 30
        settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 5  # no wait past 4 s from the claim
        make_subscriber("one@example.com")
        mailing = _send_all(Post(), django_capture_on_commit_callbacks)
        (row,) = _rows(mailing).values()
        assert row.status == Delivery.Status.PENDING and "timed out" in row.error
        assert server.accepted == []
    finally:
        server.close()
