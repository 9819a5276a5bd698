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
import re
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

try:
    from anymail.exceptions import AnymailError, AnymailRecipientsRefused
except ImportError:  # django-anymail is optional
    AnymailError = AnymailRecipientsRefused = None

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to a batch of deliveries (or digests)."""

    sent: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    retry: list = field(default_factory=list)  # next_attempt_at set
    failed: list = field(default_factory=list)  # error set
    unsent: list = field(default_factory=list)  # out of time: back to pending as they were
    invalid: list = field(default_factory=list)  # also failed: the address cannot exist


class Transport:
    """Any Django email backend, one message per call. `raw` says whether
    the backend sends a message's bytes as they are (emails.PrebuiltEmail),
    so the caller can build the cheaper form.

    No network wait lasts longer than the backend's own timeout
    (EMAIL_TIMEOUT for SMTP, ANYMAIL's REQUESTS_TIMEOUT for a provider), nor
    past `deadline` (time.monotonic()): a hung server cannot keep a batch
    beyond its claim.
    """

    def __init__(self, connection, deadline=None):
        self.connection = connection
        self.deadline = deadline
        self.raw = isinstance(connection, (smtp.EmailBackend, console.EmailBackend))
        # Django's SMTP backend and django-anymail's HTTP backends keep their
        # timeout here (seconds, or None for none).
        self.timeout = getattr(connection, "timeout", None)

    def limit(self):
        """Seconds the next network wait may take."""
        limits = [t for t in (self.timeout,) if isinstance(t, int | float)]
        if self.deadline is not None:
            limits.append(max(0.1, self.deadline - time.monotonic()))
        return min(limits) if limits else None

    def _bound(self):
        if hasattr(self.connection, "timeout"):
            self.connection.timeout = self.limit()

    def open(self):
        self._bound()
        self.connection.open()

    def send(self, address, message):
        self._bound()
        self.connection.send_messages([message])

    def reset(self):
        """Make the connection usable again after a refused message."""

    def close(self):
        self.connection.close()


class SMTPTransport(Transport):
    """Django's SMTP backend, driven directly: the backend would parse both
    addresses again for each message; ours are checked already. Bodies go
    as 8bit where the server offers 8BITMIME."""

    def __init__(self, connection, deadline=None):
        super().__init__(connection, deadline)
        self.sender = sanitize_address(conf.from_email, "utf-8")
        self.options = []

    def _bound(self):
        # The socket's timeout bounds each reply we wait for.
        super()._bound()
        sock = getattr(self.connection.connection, "sock", None)
        if sock is not None:
            sock.settimeout(self.limit())

    def open(self):
        super().open()
        # If the greeting fails, the first send fails too and is retried.
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self._bound()
            self.connection.connection.ehlo_or_helo_if_needed()
            if self.connection.connection.has_extn("8bitmime"):
                self.options = ["BODY=8BITMIME"]

    def send(self, address, message):
        """smtplib's sendmail, step by step, to tell an ambiguous outcome:
        a connection lost after the whole message went out and before the
        server's answer (it may have been accepted) raises AmbiguousSend."""
        self._bound()
        smtp_connection = self.connection.connection
        smtp_connection.ehlo_or_helo_if_needed()
        code, reply = smtp_connection.mail(self.sender, self.options)
        if code != 250:
            smtp_connection.rset()
            raise smtplib.SMTPSenderRefused(code, reply, self.sender)
        code, reply = smtp_connection.rcpt(address)
        if code not in (250, 251):
            smtp_connection.rset()
            raise smtplib.SMTPRecipientsRefused({address: (code, reply)})
        smtp_connection.putcmd("data")
        code, reply = smtp_connection.getreply()
        if code != 354:
            smtp_connection.rset()
            raise smtplib.SMTPDataError(code, reply)
        data = re.sub(rb"(?m)^\.", b"..", message.raw)  # RFC 5321 dot-stuffing
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        smtp_connection.send(data + b".\r\n")
        try:
            code, reply = smtp_connection.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as error:
            raise AmbiguousSend(f"connection lost after the message was sent: {error}") from error
        if code != 250:
            smtp_connection.rset()
            raise smtplib.SMTPDataError(code, reply)

    def reset(self):
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self._bound()
            self.connection.connection.rset()

    def close(self):
        if self.connection.connection is not None:
            self._bound()  # QUIT waits for a reply too
        super().close()


def transport(deadline=None):
    """The Transport for the configured EMAIL_BACKEND."""
    connection = get_connection()
    if type(connection) is smtp.EmailBackend:
        return SMTPTransport(connection, deadline)
    return Transport(connection, deadline)


def journal_key(kind, pk):
    return f"subscriptions:sent:{kind}:{pk}"


def journal_sent(kind, pks):
    """Of these, the ones a worker noted as accepted by the mail server (it
    may have died before telling the database)."""
    found = caches[conf.CACHE].get_many([journal_key(kind, pk) for pk in pks])
    return {pk for pk in pks if journal_key(kind, pk) in found}


# How often a batch asks the database which of its readers may still be
# sent to: a reader who leaves, or erases themselves, mid-batch gets nothing
# more than the message in flight then.
RECHECK_SECONDS = 0.5


def deliver(kind, items, build, recheck=None):
    """Send build(item, raw) to each item's reader over one connection; an
    Outcome.

    Readers no longer confirmed are skipped: as claimed, and, every
    RECHECK_SECONDS while the batch runs, as recheck(subscriber ids) — the
    ids still confirmed — says. Each accepted message is noted
    in the shared cache at once (the journal), so a worker killed mid-batch
    re-sends at most the message in flight. Whatever goes wrong for one
    reader stays on that reader's row (see classify()): transient failures
    are retried later with exponential backoff and jitter, final ones fail,
    and the batch goes on.
    """
    outcome = Outcome()
    journal = caches[conf.CACHE]
    # Stop starting sends well before the sweeper would take this batch's
    # claim back as a dead worker's (a slow server, a low MAX_RATE): the
    # rest go back to pending for the next run. No network wait may run past
    # the hard deadline, so a hung server cannot outlive the claim either.
    started = time.monotonic()
    claim_timeout = conf.duration("CLAIM_TIMEOUT").total_seconds()
    deadline = started + claim_timeout / 2
    sender = transport(deadline=started + claim_timeout * 0.8)
    pace = Pace()
    checked_at, gone = started, set()
    try:
        sender.open()
    except Exception as error:  # noqa: BLE001 - every reader of the batch waits for the next try
        for item in items:
            _retry(outcome, item, f"could not connect: {error}")
        return outcome
    try:
        for index, item in enumerate(items):
            if time.monotonic() > deadline:
                outcome.unsent.extend(items[index:])
                break
            if recheck and time.monotonic() - checked_at >= RECHECK_SECONDS:
                rest = {i.subscriber_id for i in items[index:] if i.subscriber_id}
                gone = rest - set(recheck(rest))
                checked_at = time.monotonic()
            subscriber = item.subscriber
            if (
                subscriber is None
                or subscriber.status != subscriber.Status.CONFIRMED
                or subscriber.pk in gone
            ):
                outcome.skipped.append(item)
                continue
            try:
                pace.wait()
                sender.send(subscriber.email, build(item, sender.raw))
            except Exception as error:  # noqa: BLE001 - one reader's failure is that reader's
                failure = classify(error)
                if failure.unexpected:
                    logger.exception("Unexpected error sending %s %s", kind, item.pk)
                item.ambiguous = item.ambiguous or failure.ambiguous
                if failure.final:
                    _fail(outcome, item, failure)
                else:
                    _retry(outcome, item, failure.text)
                if failure.reset:
                    sender.reset()
                if failure.reconnect:
                    try:
                        sender.close()
                        sender.open()
                    except Exception as reconnect_error:  # noqa: BLE001
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
        except Exception:  # noqa: BLE001, S110 - the batch's outcome is what matters now
            pass
    return outcome


class AmbiguousSend(smtplib.SMTPServerDisconnected):
    """The message went out whole but its answer never came: the server may
    have accepted it. Retried (a reader may get it twice, never none) and
    counted on the row."""


@dataclass
class Failure:
    """What one failed send means for its reader."""

    text: str
    final: bool = False  # do not try this message again
    refused: bool = False  # the address was refused for good: counts towards HARD_BOUNCE_LIMIT
    invalid: bool = False  # the provider says the address cannot exist: suppress it now
    reconnect: bool = False  # the connection cannot be trusted any more
    reset: bool = False  # the SMTP transaction must be reset
    ambiguous: bool = False  # the message may have been accepted all the same
    unexpected: bool = False  # nothing we know: logged with its traceback


def _text(value):
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _smtp_reply(code, text):
    """An SMTP server's reply to one recipient: 5xx is final, 4xx is not."""
    text = f"{code} {_text(text)}"
    return Failure(text, final=500 <= int(code) < 600, refused=500 <= int(code) < 600)


# Mailgun answers 400 for a whole call when a 'to' address is invalid:
# "'to' parameter is not a valid address. please check documentation".
_INVALID_ADDRESS = re.compile(r"\bto\b.{0,40}not a valid address", re.IGNORECASE)


def classify(error):
    """The Failure an exception raised while sending to one reader means,
    as the SMTP RFCs and the providers document their answers:

    - SMTP: 5xx for a recipient or its data is final (the address is
      refused); 4xx, dropped connections and timeouts are retried.
    - An email provider's API (django-anymail): a recipient the provider
      refuses is final and the address is suppressed; 429 (slow down), 5xx,
      401/403 (our credentials: not the reader's fault), 408 and network
      errors or timeouts are retried; any other 4xx fails that message
      without counting against the address.
    - Anything else (a cache error in the pace, a bug) is retried and logged.
    """
    if isinstance(error, AmbiguousSend):
        return Failure(f"ambiguous: {error}", reconnect=True, ambiguous=True)
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(error.recipients.values()))
        return _smtp_reply(code, text)
    if isinstance(error, smtplib.SMTPDataError):
        return _smtp_reply(error.smtp_code, error.smtp_error)
    if isinstance(error, UnicodeError):
        # A non-ASCII local part needs SMTPUTF8, which this path does not speak.
        return Failure(
            "553 address cannot be sent without SMTPUTF8", final=True, refused=True, reset=True
        )
    if AnymailError is not None and isinstance(error, AnymailError):
        return _provider_answer(error)
    if isinstance(error, OSError | smtplib.SMTPException):
        # The connection is gone or the server is in trouble: retry this
        # reader later; reconnect for the next one.
        return Failure(str(error) or type(error).__name__, reconnect=True)
    return Failure(f"{type(error).__name__}: {error}", reconnect=True, unexpected=True)


def _provider_answer(error):
    status = getattr(error, "status_code", None)
    text = " ".join(str(error).split())
    if isinstance(error, AnymailRecipientsRefused):
        return Failure(f"refused by the provider: {text}", final=True, refused=True, invalid=True)
    if status is None:  # No answer: network error or timeout.
        return Failure(f"no answer from the provider: {text}", reconnect=True)
    if status in (401, 403, 408, 429) or status >= 500 or status < 400:
        return Failure(f"{status} from the provider: {text}")
    if _INVALID_ADDRESS.search(text):
        return Failure(f"{status} invalid address: {text}", final=True, refused=True, invalid=True)
    return Failure(f"{status} from the provider: {text}", final=True)


def _fail(outcome, item, failure):
    item.attempts += 1
    item.permanent = failure.refused
    item.error = failure.text[:500]
    if failure.invalid:
        outcome.invalid.append(item)
    outcome.failed.append(item)


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
