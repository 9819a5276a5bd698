"""How a batch of messages leaves: over SMTP, or through any other Django
email backend (an email provider's API through django-anymail, the console
or file backends), one connection per batch.

deliver() is the one loop every batch goes through: it skips readers no
longer confirmed, keeps the pace (MAX_RATE across all workers), notes each
accepted message in the send journal, stops before the batch's claim goes
stale, and classifies each failure as worth a retry or final. It returns an
Outcome for the caller to record on the ledger. A Transport is the small
part that differs: how a connection opens, sends one message and closes.
"""

import contextlib
import logging
import random
import smtplib
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.cache import caches
from django.core.mail import get_connection
from django.core.mail.backends import console, smtp
from django.core.mail.message import sanitize_address
from django.utils import timezone

from .conf import conf

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to a batch of deliveries (or digests)."""

    sent: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    retry: list = field(default_factory=list)  # next_attempt_at set
    failed: list = field(default_factory=list)  # error set
    unsent: list = field(default_factory=list)  # out of time: back to pending as they were


class Transport:
    """Any Django email backend, one message per call. `raw` says whether
    the backend sends a message's bytes as they are (emails.PrebuiltEmail),
    so the caller can build the cheaper form."""

    def __init__(self, connection):
        self.connection = connection
        self.raw = isinstance(connection, (smtp.EmailBackend, console.EmailBackend))

    def open(self):
        self.connection.open()

    def send(self, address, message):
        self.connection.send_messages([message])

    def reset(self):
        """Make the connection usable again after a refused message."""

    def close(self):
        self.connection.close()


class SMTPTransport(Transport):
    """Django's SMTP backend, driven directly: the backend would parse both
    addresses again for each message; ours are checked already. Bodies go
    as 8bit where the server offers 8BITMIME."""

    def __init__(self, connection):
        super().__init__(connection)
        self.sender = sanitize_address(conf.from_email, "utf-8")
        self.options = []

    def open(self):
        super().open()
        # If the greeting fails, the first send fails too and is retried.
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self.connection.connection.ehlo_or_helo_if_needed()
            if self.connection.connection.has_extn("8bitmime"):
                self.options = ["BODY=8BITMIME"]

    def send(self, address, message):
        self.connection.connection.sendmail(self.sender, [address], message.raw, self.options)

    def reset(self):
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self.connection.connection.rset()


def transport():
    """The Transport for the configured EMAIL_BACKEND."""
    connection = get_connection()
    if type(connection) is smtp.EmailBackend:
        return SMTPTransport(connection)
    return Transport(connection)


def journal_key(kind, pk):
    return f"subscriptions:sent:{kind}:{pk}"


def journal_sent(kind, pks):
    """Of these, the ones a worker noted as accepted by the mail server (it
    may have died before telling the database)."""
    found = caches[conf.CACHE].get_many([journal_key(kind, pk) for pk in pks])
    return {pk for pk in pks if journal_key(kind, pk) in found}


def deliver(kind, items, build):
    """Send build(item, raw) to each item's reader over one connection; an
    Outcome.

    Readers no longer confirmed are skipped. Each accepted message is noted
    in the shared cache at once (the journal), so a worker killed mid-batch
    re-sends at most the message in flight. Transient failures (4xx,
    dropped or refused connections, timeouts) are retried later with
    exponential backoff and jitter; 5xx refusals fail for good.
    """
    outcome = Outcome()
    journal = caches[conf.CACHE]
    sender = transport()
    pace = Pace()
    # Stop well before the sweeper would take this batch's claim back as a
    # dead worker's (a slow server, a low MAX_RATE): the rest go back to
    # pending for the next run.
    deadline = time.monotonic() + conf.duration("CLAIM_TIMEOUT").total_seconds() / 2
    try:
        sender.open()
    except (OSError, smtplib.SMTPException) as error:
        for item in items:
            _retry(outcome, item, f"could not connect: {error}")
        return outcome
    try:
        for index, item in enumerate(items):
            if time.monotonic() > deadline:
                outcome.unsent.extend(items[index:])
                break
            subscriber = item.subscriber
            if subscriber is None or subscriber.status != subscriber.Status.CONFIRMED:
                outcome.skipped.append(item)
                continue
            pace.wait()
            try:
                sender.send(subscriber.email, build(item, sender.raw))
            except smtplib.SMTPRecipientsRefused as error:
                code, text = next(iter(error.recipients.values()))
                _fail_or_retry(outcome, item, code, text)
            except smtplib.SMTPDataError as error:
                _fail_or_retry(outcome, item, error.smtp_code, error.smtp_error)
            except UnicodeError:
                # A non-ASCII local part needs SMTPUTF8, which this path does not speak.
                _fail_or_retry(outcome, item, 553, "address cannot be sent without SMTPUTF8")
                sender.reset()
            except (OSError, smtplib.SMTPException) as error:
                # The connection is gone or the server is in trouble: retry
                # this reader later; reconnect for the next one.
                _retry(outcome, item, str(error) or type(error).__name__)
                try:
                    sender.close()
                    sender.open()
                except (OSError, smtplib.SMTPException) as reconnect_error:
                    for rest in items[index + 1 :]:
                        _retry(outcome, rest, f"could not connect: {reconnect_error}")
                    break
            else:
                outcome.sent.append(item)
                try:
                    journal.set(journal_key(kind, item.pk), 1, timeout=7 * 24 * 3600)
                except Exception:  # noqa: BLE001 - any cache backend's error
                    # The cache is down (Redis restarting): the batch still
                    # records this send in the database when it ends; only
                    # a crash before then would repeat it.
                    logger.warning("Send journal unavailable for %s %s", kind, item.pk)
    finally:
        try:
            sender.close()
        except (OSError, smtplib.SMTPException):
            pass
    return outcome


def _fail_or_retry(outcome, item, code, text):
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    if 500 <= int(code) < 600:
        item.permanent = True
        item.attempts += 1
        item.error = f"{code} {text}"[:500]
        outcome.failed.append(item)
    else:
        _retry(outcome, item, f"{code} {text}")


def _retry(outcome, item, error):
    item.attempts += 1
    item.error = str(error)[:500]
    if item.attempts >= conf.MAX_ATTEMPTS:
        item.error = f"gave up after {item.attempts} attempts: {item.error}"[:500]
        outcome.failed.append(item)
        return
    base = conf.duration("RETRY_BACKOFF").total_seconds() * 2 ** (item.attempts - 1)
    delay = min(base, conf.duration("RETRY_BACKOFF_MAX").total_seconds())
    item.next_attempt_at = timezone.now() + timedelta(seconds=delay * random.uniform(0.5, 1.5))
    outcome.retry.append(item)


class Pace:
    """At most SUBSCRIPTIONS_MAX_RATE messages a second across all workers
    (an email provider's quota), counted per second in the shared cache."""

    def __init__(self):
        # At least one a second: the counter is per second.
        self.rate = max(1, int(conf.MAX_RATE)) if conf.MAX_RATE else None
        self.cache = caches[conf.CACHE]

    def wait(self):
        if not self.rate:
            return
        while True:
            now = time.time()
            key = f"subscriptions:pace:{int(now)}"
            self.cache.add(key, 0, timeout=5)
            if self.cache.incr(key) <= self.rate:
                return
            time.sleep(int(now) + 1 - now)
