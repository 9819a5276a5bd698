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

import atexit
import contextlib
import dataclasses
import logging
import os
import random
import re
import select
import smtplib
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as day_start

from django.core.cache import caches
from django.core.mail import get_connection
from django.core.mail.backends import console, smtp
from django.core.mail.message import sanitize_address
from django.utils import timezone

from . import rediscache
from . import smtp as pipelined
from .conf import conf
from .providers import provider_of
from .smtp import AmbiguousSend

try:
    from anymail.exceptions import AnymailError, AnymailRecipientsRefused
except ImportError:  # django-anymail is optional
    AnymailError = AnymailRecipientsRefused = None

# Every reader of a call refused, each for their own address: no split helps.
ProviderRefusedAll = AnymailRecipientsRefused or type("ProviderRefusedAll", (Exception,), {})

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
    held: str = ""  # why the batch was held (_hold), if it was


# send_many's result for a reader it did not attempt (the connection died
# first, or the batch is being held): back to pending as they were.
NOT_TRIED = pipelined.NOT_TRIED


class Transport:
    """Any Django email backend, one message per call. `raw` says whether
    the backend sends a message's bytes as they are (emails.PrebuiltEmail),
    so the caller can build the cheaper form.

    No network wait lasts longer than the backend's own timeout
    (EMAIL_TIMEOUT for SMTP, ANYMAIL's REQUESTS_TIMEOUT for a provider), nor
    past `deadline` (time.monotonic()): a hung server cannot keep a batch
    beyond its claim.
    """

    # Readers one send_many() call may take.
    batch_size = 1

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

    def send_many(self, pairs, build):
        """Send build(item, raw) to each (address, item) of `pairs`; one
        result per pair, in order: None (accepted), the exception send()
        raised for that reader, or NOT_TRIED. Stops at the first failure
        that holds the batch or needs a new connection."""
        results = [NOT_TRIED] * len(pairs)
        for index, (address, item) in enumerate(pairs):
            try:
                self.send(address, build(item, self.raw))
            except Exception as error:  # noqa: BLE001 - this reader's result
                results[index] = error
                failure = classify(error)
                if failure.reset:
                    self.reset()
                if failure.hold or failure.reconnect:
                    break
            else:
                results[index] = None
        return results

    def reset(self):
        """Make the connection usable again after a refused message."""

    def close(self):
        self.connection.close()


class ProviderAnswer(Exception):  # noqa: N818 - an answer, not always an error
    """A provider's answer about one reader of a batch call that was not a
    plain acceptance: `refused` (the address is invalid or inactive there),
    `sent` (accepted, but the answer does not say so for this reader), or
    neither (this reader's message failed; try again later)."""

    def __init__(self, text, refused=False, sent=False):
        super().__init__(text)
        self.refused, self.sent = refused, sent


class ProviderTransport(Transport):
    """A first-class provider's batch API through django-anymail
    (providers.py): send_many() sends one API call for all its readers,
    each reader's links and headers filled in by the provider. A call the
    provider refuses whole because of one invalid address is split in two,
    and again, until that address is found; the other readers still go. A
    build without a template (digests) goes one message per reader."""

    def __init__(self, connection, provider, deadline=None):
        super().__init__(provider.connection(connection), deadline)
        self.provider = provider
        self.batch_size = max(
            1, min(conf.RECIPIENTS_PER_CALL or provider.per_call, provider.per_call)
        )
        self.calls = 0  # API calls made
        # Called before each extra call of a split call (the calls-per-second
        # pace); False: no time left for it.
        self.before_call = None

    def send_many(self, pairs, build):
        if not (hasattr(build, "template") and hasattr(build, "values")):
            return super().send_many(pairs, build)
        return self._call(pairs, build, first=True)

    def _call(self, pairs, build, first=False):
        if not first and self.before_call and not self.before_call():
            return [NOT_TRIED] * len(pairs)
        readers, metadata = [], {}
        for address, item in pairs:  # address: item.subscriber.email (deliver)
            readers.append((item.subscriber, build.values(item)))
            metadata[address] = {"row": f"{type(item).__name__.lower()}:{item.pk}"}
        message = self.provider.prepare(
            build.template.for_readers(readers, self.provider.field, metadata, build.links())
        )
        self.calls += 1
        try:
            self._bound()
            self.connection.send_messages([message])
        except Exception as error:  # noqa: BLE001 - classified by the caller
            failure = classify(error)
            if len(pairs) > 1 and failure.invalid and not isinstance(error, ProviderRefusedAll):
                # One address spoils the whole call (Mailgun's 400): find it.
                half = len(pairs) // 2
                results = self._call(pairs[:half], build)
                if any(r is NOT_TRIED or _holds(r) for r in results):
                    return results + [NOT_TRIED] * (len(pairs) - half)
                return results + self._call(pairs[half:], build)
            return [error] * len(pairs)
        statuses = {
            address.lower(): status.status
            for address, status in (message.anymail_status.recipients or {}).items()
        }
        errors = getattr(message, "recipient_errors", {})
        results = []
        for address, _ in pairs:
            status = statuses.get(address.lower(), "unknown")
            text = errors.get(address) or f"{status} by the provider"
            if status in ("sent", "queued", "scheduled"):
                results.append(None)
            elif status in ("invalid", "rejected"):
                results.append(ProviderAnswer(text, refused=True))
            elif status == "failed":
                results.append(ProviderAnswer(text))
            else:  # the answer does not say for this reader: it went in the call
                results.append(ProviderAnswer(f"accepted, {text}", sent=True))
        return results


def _holds(result):
    return isinstance(result, Exception) and classify(result).hold


class SMTPTransport(Transport):
    """Django's SMTP backend's connections, driven by pipelined.Client: ours are
    checked addresses already (the backend would parse both again for each
    message), bodies go as 8bit where the server offers 8BITMIME, commands
    are pipelined (RFC 2920) where it offers PIPELINING, and messages go as
    BDAT chunks, SMTP_WINDOW of them in flight per connection, where it also
    offers CHUNKING (RFC 3030).

    SMTP_CONNECTIONS connections, opened together, each driven by its own
    thread: a send_many call's messages are shared among them as each is
    ready for the next, so a distant relay's round trips overlap. Where the
    server offers CHUNKING, the first call takes a window per connection,
    and each later one as many as the last call's pace would send in
    RECHECK_SECONDS, up to WINDOWS windows per connection: against a fast
    server the windows follow each other within a call (a call ends with a
    round trip in which nothing new goes out), against a slow one a call
    still lasts about as long as deliver() may go without re-checking its
    readers. Where it does not, a call takes DEPTH messages per connection
    (with pipelining alone, one round trip per message, plus one per call).

    close() keeps the connections that can be used again for the next batch
    of this process (KEEP_SECONDS), which takes them up instead of opening
    new ones.
    """

    DEPTH = 8
    WINDOWS = 8

    def __init__(self, connection, deadline=None, connections=None, window=None):
        super().__init__(connection, deadline)
        self.sender = sanitize_address(conf.from_email, "utf-8")
        count = max(1, int(connections or conf.SMTP_CONNECTIONS or 1))
        self.window = max(0, int(conf.SMTP_WINDOW if window is None else window))
        self.backends = [connection, *(get_connection() for _ in range(count - 1))]
        self.clients = [None] * count
        self.pool = None
        self.pace = None  # messages a second the last call sent (with CHUNKING)
        # on_accepted(items) is called with the messages accepted together
        # (deliver journals them there), from the connection's thread, as
        # soon as their answers are read.
        self.on_accepted = None

    @property
    def batch_size(self):
        """Messages for the next send_many call, for the connections open."""
        if not any(c is not None and c.chunking for c in self.clients):
            return len(self.backends) * self.DEPTH
        windows = len(self.backends) * self.window
        if self.pace is None:
            return windows
        return max(windows, min(windows * self.WINDOWS, int(self.pace * RECHECK_SECONDS)))

    def _on_each(self, function, indexes):
        """function(i) for each i, on the connections' threads when there
        are several; the errors raised, in order (None for none)."""

        def run(i):
            try:
                function(i)
            except Exception as error:  # noqa: BLE001 - returned to the caller
                return error
            return None

        indexes = list(indexes)
        if len(self.backends) == 1 or len(indexes) == 1:
            return [run(i) for i in indexes]
        if self.pool is None:
            self.pool = ThreadPoolExecutor(len(self.backends), thread_name_prefix="smtp")
        return list(self.pool.map(run, indexes))

    def _open_one(self, i):
        self._close_one(i)
        backend = self.backends[i]
        backend.timeout = self.limit()  # bounds the connection and greeting
        backend.connection = self._take_up(backend)
        if backend.connection is None:
            backend.open()
        self.clients[i] = pipelined.Client(
            backend.connection, self.sender, self.limit, window=self.window
        )

    def _take_up(self, backend):
        """A connection to the same server that an earlier batch of this
        process kept open and that is still there, else None: one kept a
        moment ago on which the server has said nothing since (not even
        closed it) is as sure as one between two calls of a batch; an
        older one must answer NOOP first. The batch starts at the pace the
        connection's last batch ended at."""
        while (kept := _kept.take(_server(backend))) is not None:
            connection, age, pace = kept
            try:
                quiet = not select.select([connection.sock], [], [], 0)[0]
                if age < FRESH_SECONDS and quiet or self._noop(connection):
                    self.pace = self.pace or pace
                    return connection
            except Exception:  # noqa: BLE001, S110 - gone: closed below
                pass
            connection.close()  # gone, or saying what we did not ask: not a byte more
        return None

    def _noop(self, connection):
        connection.sock.settimeout(self.limit())
        return connection.noop()[0] == 250

    def open(self):
        """Open every connection; fails only if none opens."""
        errors = self._on_each(self._open_one, range(len(self.backends)))
        if all(client is None for client in self.clients):
            raise next(error for error in errors if error is not None)

    def _alive(self):
        return [c for c in self.clients if c is not None and not c.broken]

    def send(self, address, message):
        """One message, over the first connection."""
        clients = self._alive()
        if not clients:
            raise smtplib.SMTPServerDisconnected("not connected")
        result = clients[0].send([(address, _raw(message))])[0]
        if result is pipelined.NOT_TRIED:
            raise smtplib.SMTPServerDisconnected("not sent")
        if result is not None:
            raise result

    def send_many(self, pairs, build):
        results = [NOT_TRIED] * len(pairs)
        jobs = deque((index, address, item) for index, (address, item) in enumerate(pairs))
        if not jobs:
            return results
        dead = [i for i, c in enumerate(self.clients) if c is not None and c.broken]
        if dead:  # A connection lost in an earlier call: open it again.
            self._on_each(self._open_one, dead)
        clients = self._alive()
        if not clients:
            results[jobs[0][0]] = smtplib.SMTPServerDisconnected("not connected")
            return results
        lock, stop = threading.Lock(), threading.Event()

        def take():
            # Each message is built as a connection is ready for it: the
            # first goes out at once, and building overlaps the others' waits.
            while True:
                with lock:
                    if not jobs or stop.is_set():
                        return None
                    index, address, item = jobs.popleft()
                try:
                    return index, address, _raw(build(item, self.raw))
                except Exception as error:  # noqa: BLE001 - this reader's result
                    results[index] = error

        streak = [0]  # failures in a row (as they come) that are not about the address

        def report(done):
            accepted = []
            for index, result in done:
                if result is None:
                    accepted.append(pairs[index][1])
                    streak[0] = 0
                elif result is pipelined.NOT_TRIED:
                    result = NOT_TRIED
                else:
                    failure = classify(result)
                    with lock:
                        streak[0] = 0 if failure.refused else streak[0] + 1
                        if failure.hold or streak[0] >= BREAKER:
                            stop.set()  # The batch's problem: start no more messages.
                results[index] = result
            if accepted and self.on_accepted is not None:
                self.on_accepted(accepted)
            return stop.is_set()

        def run(i):
            self.clients[i].run(take, report)

        ran = [i for i, c in enumerate(self.clients) if c in clients]
        started = time.monotonic()
        errors = self._on_each(run, ran)
        tried = sum(r is not NOT_TRIED for r in results)
        if tried == len(pairs):  # a whole call: its pace sizes the next
            self.pace = tried / max(time.monotonic() - started, 0.001)
        for i, error in zip(ran, errors, strict=True):
            if error is not None:  # Not an SMTP answer: a bug. This connection is done.
                logger.error("SMTP connection failed", exc_info=error)
                self.clients[i].broken = True
        return results

    def reset(self):
        """Each Client resets its own transactions."""

    def _detach(self, i):
        """Take backend i's connection off it (the backend can open a new
        one at once); (the server, the smtplib connection or None, whether
        it can be used again)."""
        backend, client = self.backends[i], self.clients[i]
        self.clients[i] = None
        connection, backend.connection = backend.connection, None
        return _server(backend), connection, client is not None and client.clean

    def _close_one(self, i):
        _, connection, clean = self._detach(i)
        _hang_up(connection, not clean, self.limit())

    def close(self):
        """Keep every connection that can be used again open for the next
        batch (KEEP_SECONDS); close the others. With several connections,
        QUIT and its reply are left to the connections' threads: the batch
        does not wait a round trip for them."""
        ends = [self._detach(i) for i in range(len(self.backends))]
        ends = [(server, c, clean) for server, c, clean in ends if c is not None]
        pool, self.pool = self.pool, None
        for server, connection, clean in ends:
            if clean and KEEP_SECONDS:
                _kept.put(server, connection, self.pace)
            elif pool is None:
                _hang_up(connection, not clean, self.limit())
            else:
                pool.submit(_hang_up, connection, not clean, self.limit())
        if pool is not None:
            pool.shutdown(wait=False)


# A batch keeps its SMTP connections open, for the next batch of the same
# worker process, this long (0: it closes them). Against a distant relay a
# new connection costs several round trips (the greeting, EHLO, and with
# them STARTTLS, EHLO again, AUTH); taking up a kept one costs one (NOOP).
KEEP_SECONDS = 10
# One kept less than this long ago is taken up without a NOOP unless the
# server has sent something since (closed it, or said it would).
FRESH_SECONDS = 2


def _server(backend):
    """What an SMTP connection of Django's backend `backend` is to, and as whom."""
    return (
        backend.host, backend.port, backend.username, backend.password,
        backend.use_tls, backend.use_ssl, backend.ssl_certfile, backend.ssl_keyfile,
    )  # fmt: skip


class _Kept:
    """SMTP connections kept open between batches, per server. Only the
    process that kept one takes it up (a process forked after may not: both
    would write to it)."""

    def __init__(self):
        self.lock = threading.Lock()
        # server: [(smtplib connection, kept at, process id, pace)]
        self.connections = {}

    def put(self, server, connection, pace=None):
        with self.lock:
            self.connections.setdefault(server, []).append(
                (connection, time.monotonic(), os.getpid(), pace)
            )

    def take(self, server):
        """(connection, seconds since it was kept, the pace its batch
        ended at) of the connection to `server` kept last, if it was kept
        less than KEEP_SECONDS ago, else None; the older ones are closed."""
        now, pid = time.monotonic(), os.getpid()
        with self.lock:
            kept = self.connections.pop(server, [])
            fresh = [k for k in kept if k[2] == pid and now - k[1] < KEEP_SECONDS]
            if fresh:
                self.connections[server] = fresh[:-1]
        stale = [k for k in kept if k not in fresh]
        if stale:
            threading.Thread(target=_hang_up_all, args=(stale,), daemon=True).start()
        if not fresh:
            return None
        connection, at, _, pace = fresh[-1]
        return connection, now - at, pace

    def clear(self):
        """Close every connection kept (QUIT)."""
        with self.lock:
            kept = [k for connections in self.connections.values() for k in connections]
            self.connections.clear()
        _hang_up_all(kept)


def _hang_up_all(kept):
    for connection, _, pid, _ in kept:
        if pid == os.getpid():
            _hang_up(connection, False, 1)
        else:  # our copy of another process's connection: closed, not a byte sent
            with contextlib.suppress(Exception):
                connection.close()


_kept = _Kept()
atexit.register(_kept.clear)


def _hang_up(connection, broken, timeout):
    """QUIT and close an smtplib connection; a broken one is closed without
    a byte more, not even QUIT: a message cut short in a BDAT chunk would
    take it as its own last bytes."""
    if connection is None:
        return
    try:
        if not broken and connection.sock is not None:
            connection.sock.settimeout(timeout)  # QUIT waits for a reply too
            connection.quit()
    except Exception:  # noqa: BLE001, S110 - closed below all the same
        pass
    finally:
        connection.close()


def _raw(message):
    """The bytes of a message build() made (emails.PrebuiltEmail, or any
    Django EmailMessage)."""
    raw = getattr(message, "raw", None)
    if raw is None:
        raw = message.message().as_bytes(linesep="\r\n")
    return raw


def transport(deadline=None):
    """The Transport for the configured EMAIL_BACKEND."""
    connection = get_connection()
    if type(connection) is smtp.EmailBackend:
        return SMTPTransport(connection, deadline)
    provider = provider_of(connection)
    if provider is not None:
        return ProviderTransport(connection, provider, deadline)
    return Transport(connection, deadline)


def journal_key(kind, pk):
    return f"subscriptions:sent:{kind}:{pk}"


def journal_sent(kind, pks):
    """Of these, the ones a worker noted as accepted by the mail server (it
    may have died before telling the database)."""
    found = caches[conf.CACHE].get_many([journal_key(kind, pk) for pk in pks])
    return {pk for pk in pks if journal_key(kind, pk) in found}


# How often a batch asks the database which of its readers may still be
# sent to (between send_many calls): a reader who leaves, or erases
# themselves, mid-batch gets nothing more than the call in flight then (over
# SMTP with CHUNKING, about this long's worth, and at least a window on each
# connection; without it, 8 messages on each).
RECHECK_SECONDS = 0.5
# This many readers in a row failing for a reason that is not their address
# (a relay that refuses our sender, a provider outage, our own bad
# configuration) is the batch's problem, not theirs: the batch is held.
BREAKER = 5


def deliver(kind, items, build, recheck=None):
    """Send build(item, raw) to each item's reader, in chunks of the
    transport's batch_size (one send_many call each); an Outcome.

    The readers go to the transport in chunks of its batch_size, read for
    each chunk (one for most backends; over SMTP what the server's pace
    sends in RECHECK_SECONDS, or 8 messages per connection: SMTPTransport;
    up to a provider's per-call limit for a provider's batch API,
    providers.py), each chunk in one send_many().
    Readers no longer confirmed are skipped: as claimed, and, every
    RECHECK_SECONDS while the batch runs, as recheck(subscriber ids) — the
    ids still confirmed — says. The messages a call accepted are noted in
    the shared cache at once (the journal; over SMTP as their answers are
    read), so a worker killed mid-batch re-sends at most the readers in
    flight: one message for a plain backend; over SMTP a window
    (SMTP_WINDOW) on each of its SMTP_CONNECTIONS connections where the
    server offers CHUNKING, one message on each where it does not; one API
    call's readers through a provider's batch API.

    What goes wrong for one reader stays on that reader's row (classify()):
    a refusal of their address fails it, other failures are retried with
    exponential backoff and jitter, and the batch goes on. What is the
    batch's problem rather than a reader's — the connection cannot be
    opened, the provider says slow down or refuses our credentials, or
    BREAKER readers in a row fail for reasons that are not their address —
    holds the batch: its unsent rows go back to pending for a later try
    without spending any reader's attempts, so an outage or a
    misconfiguration never fails, or suppresses, a list.

    The pace (MAX_RATE messages and CALLS_PER_SECOND calls a second) and
    the daily cap (DAILY_CAP, WARMUP) hold across all workers; readers
    past today's cap wait, pending, for tomorrow (QUOTA_WAIT).
    """
    outcome = Outcome()
    journal = caches[conf.CACHE]
    # Stop starting sends well before the sweeper would take this batch's
    # claim back as a dead worker's (a slow server, a low MAX_RATE): the
    # rest go back to pending for the next run. No network wait may run past
    # the hard deadline, so a hung server cannot outlive the claim either.
    # Both count from the claim.
    claim_timeout = conf.duration("CLAIM_TIMEOUT").total_seconds()
    claimed_at = getattr(items[0], "claimed_at", None) if items else None
    age = (timezone.now() - claimed_at).total_seconds() if claimed_at else 0.0
    started = time.monotonic() - max(0.0, age)
    deadline = started + claim_timeout / 2
    sender = transport(deadline=started + claim_timeout * 0.8)
    if hasattr(sender, "on_accepted"):
        # A transport sending several messages at once journals them as
        # their answers are read: at most the messages in flight are repeated.
        sender.on_accepted = lambda items: _journal(journal, kind, items)
    pace = Pace()
    calls = Pace(conf.CALLS_PER_SECOND, "calls")
    quota = Quota()
    # A chunk never needs more than a second of the pace. Its slots are all
    # taken in one second, but its messages may still be going out in the
    # next: over SMTP, whose chunks are many messages on several
    # connections, a chunk is at most a tenth of a second's worth, so what
    # spills over stays small. A provider's call is one request: a second's
    # worth. (Over SMTP the size depends on what the server offers: known
    # once the connections are open.)
    try:
        sender.open()
    except Exception as error:  # noqa: BLE001 - the batch waits for the next try
        _hold(outcome, items, f"could not connect: {error}")
        return outcome

    def chunk_size():
        # Read for each chunk: over SMTP it follows the server's pace.
        size = int(sender.batch_size)
        if pace.rate:
            share = pace.rate if isinstance(sender, ProviderTransport) else pace.rate // 10
            size = min(size, share)
        return max(1, size)

    sender.before_call = lambda: calls.wait(deadline)
    checked_at, gone = time.monotonic(), set()
    streak = []  # (item, Failure): consecutive failures that are not about the address
    try:
        index = 0
        while index < len(items):
            if time.monotonic() > deadline:
                _flush(outcome, streak)
                outcome.unsent.extend(items[index:])
                break
            if recheck and time.monotonic() - checked_at >= RECHECK_SECONDS:
                rest = {i.subscriber_id for i in items[index:] if i.subscriber_id}
                gone = rest - set(recheck(rest))
                checked_at = time.monotonic()
            # While failures mount, no more readers than the breaker has left.
            size = chunk_size()
            room = min(size, BREAKER - len(streak)) if streak else size
            chunk = []
            while index < len(items) and len(chunk) < max(1, room):
                item = items[index]
                index += 1
                subscriber = item.subscriber
                if (
                    subscriber is None
                    or subscriber.status != subscriber.Status.CONFIRMED
                    or subscriber.pk in gone
                ):
                    outcome.skipped.append(item)
                else:
                    chunk.append(item)
            if not chunk:
                continue
            rest = items[index:]
            try:
                results = None
                granted = quota.take(len(chunk))
                if granted < len(chunk):
                    # Today's cap is reached: the rest wait for tomorrow.
                    _flush(outcome, streak)
                    _wait_for_quota(outcome, chunk[granted:] + rest, quota.tomorrow())
                    chunk, rest, index = chunk[:granted], [], len(items)
                    if not chunk:
                        break
                ready = pace.wait(deadline, len(chunk)) and calls.wait(deadline)
            except Exception as error:  # noqa: BLE001 - the shared cache is down: classified below
                quota.give(len(chunk))
                results, ready = [error] * len(chunk), True
            if not ready:
                quota.give(len(chunk))
                _flush(outcome, streak)
                outcome.unsent.extend(chunk + rest)
                break
            if results is None:
                try:
                    results = sender.send_many([(i.subscriber.email, i) for i in chunk], build)
                except Exception as error:  # noqa: BLE001 - classified below
                    results = [error] * len(chunk)
            stop, streak = _handle(outcome, journal, kind, sender, chunk, results, streak, rest)
            if stop:
                break
        _flush(outcome, streak)
    finally:
        try:
            sender.close()
        except Exception:  # noqa: BLE001, S110 - the batch's outcome is what matters now
            pass
    return outcome


def _handle(outcome, journal, kind, sender, chunk, results, streak, rest):
    """Record one send_many()'s results; (whether the batch stops, streak)."""
    failures = {}  # one classification per exception: a whole call's refusal is one
    for item, result in zip(chunk, results, strict=True):
        if isinstance(result, BaseException):
            if id(result) not in failures:
                failures[id(result)] = classify(result)
                if failures[id(result)].unexpected:
                    logger.error("Unexpected error sending %s %s", kind, item.pk, exc_info=result)
            # Whoever was in a call that may have gone through is flagged.
            item.ambiguous = item.ambiguous or failures[id(result)].ambiguous
    held, held_text, untried, accepted = None, "", [], []
    reset = reconnect = False
    for item, result in zip(chunk, results, strict=True):
        if result is NOT_TRIED:
            untried.append(item)
            continue
        if held is not None:  # after a hold: accepted still count, the rest wait
            if result is None or failures[id(result)].sent:
                accepted.append(item)
            else:
                held.append(item)
            continue
        if result is None:
            _flush(outcome, streak)
            accepted.append(item)
            continue
        # Errors name the recipient; the row already says who it is.
        failure = dataclasses.replace(failures[id(result)])
        failure.text = _without(failure.text, item.subscriber.email)
        if failure.sent:
            accepted.append(item)
            continue
        if failure.refused:  # about this address: this reader's alone
            _flush(outcome, streak)
            _fail(outcome, item, failure)
        else:
            streak.append((item, failure))
            if failure.hold or len(streak) >= BREAKER:
                logger.warning("Holding a %s batch: %s", kind, failure.text)
                held, held_text = [i for i, _ in streak], failure.text
                streak = []
                continue
        reset = reset or failure.reset
        reconnect = reconnect or failure.reconnect
    # Over SMTP each message was journaled as its answer came (on_accepted).
    _sent(
        outcome,
        journal,
        kind,
        *accepted,
        journaled=getattr(sender, "on_accepted", None) is not None,
    )
    if held is not None:
        _hold(outcome, held + untried + rest, held_text)
        return True, streak
    outcome.unsent.extend(untried)
    if reset:
        sender.reset()
    if reconnect:
        try:
            with contextlib.suppress(Exception):
                sender.close()
            sender.open()
        except Exception as reconnect_error:  # noqa: BLE001
            _hold(outcome, [i for i, _ in streak] + rest, f"could not connect: {reconnect_error}")
            return True, []
    return False, streak


def _sent(outcome, journal, kind, *items, journaled=False):
    """These readers' messages were accepted: noted in the journal at once
    (unless they are already), in one round trip however many."""
    outcome.sent.extend(items)
    if not journaled:
        _journal(journal, kind, items)


def _journal(journal, kind, items):
    """Note these as accepted in the shared cache, in one round trip (the
    sweeper reads it: journal_sent)."""
    if not items:
        return
    keys = [journal_key(kind, i.pk) for i in items]
    with contextlib.suppress(Exception):  # not a script Redis runs (a cluster): as any cache
        set_all = _set_all(journal)
        if set_all is not None:
            set_all(keys)
            return
    try:
        if len(keys) == 1:  # set_many would wrap one SET in MULTI/EXEC
            journal.set(keys[0], 1, timeout=JOURNAL_SECONDS)
        else:
            journal.set_many(dict.fromkeys(keys, 1), timeout=JOURNAL_SECONDS)
    except Exception:  # noqa: BLE001 - any cache backend's error
        # The cache is down (Redis restarting): the batch still records this
        # send in the database when it ends; only a crash before then would
        # repeat it.
        logger.warning("Send journal unavailable for %s %s", kind, [i.pk for i in items][:10])


JOURNAL_SECONDS = 7 * 24 * 3600

# Each key set to 1 for JOURNAL_SECONDS, in one command: django-redis's
# set_many spends more of the worker's time per key than the rest of a
# message's SMTP commands (a pipelined SET each, in MULTI/EXEC).
_SET_ALL = "for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'EX', ARGV[2]) end"


def _set_all(cache):
    """set_all(keys) setting each of `keys` in `cache` as cache.set(key, 1,
    JOURNAL_SECONDS) would, in one Redis command; None for a cache that is
    not django-redis's plain client (set_many then)."""
    redis = rediscache.client(cache)
    if redis is None:
        return None
    script = rediscache.script(redis, _SET_ALL)

    def set_all(keys):
        # django-redis reads an integer back as it is: "1" is 1.
        script(keys=[cache.make_key(key) for key in keys], args=[1, JOURNAL_SECONDS])

    return set_all


def _without(text, address):
    return re.sub(re.escape(address), "<recipient>", text, flags=re.IGNORECASE)


@dataclass
class Failure:
    """What one failed send means."""

    text: str
    final: bool = False  # do not try this message again
    refused: bool = False  # the address was refused for good: counts towards HARD_BOUNCE_LIMIT
    invalid: bool = False  # the provider says the address cannot exist: suppress it now
    hold: bool = False  # the batch's problem (slow down, our credentials): hold it now
    sent: bool = False  # accepted all the same (an answer we could not read)
    reconnect: bool = False  # the connection cannot be trusted any more
    reset: bool = False  # the SMTP transaction must be reset
    ambiguous: bool = False  # the message may have been accepted all the same
    unexpected: bool = False  # nothing we know: logged with its traceback


def _text(value):
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# RFC 3463 enhanced status codes that are about the recipient's address:
# bad mailbox (5.1.1), bad domain (5.1.2), bad syntax (5.1.3), moved
# (5.1.6), bad address (5.1.10), disabled mailbox (5.2.1). Not 5.1.7/5.1.8,
# which are about our sender, nor 5.7.x (policy), 5.3.x (the system) or
# 5.5.x (protocol).
_RECIPIENT_CODES = re.compile(r"^\s*5\.(1\.(1|2|3|6|10)|2\.1)\b")


def _smtp_reply(code, text, at_recipient):
    """An SMTP server's 4xx or 5xx reply. Only a 5xx refusal of the
    recipient itself (RCPT TO, with an enhanced code about the address, or
    a bare 550/551/553) counts against the address; a 5xx about our sender
    or the message fails that message; 4xx is retried."""
    text = _text(text)
    code = int(code)
    line = f"{code} {text}"
    if code < 500:
        return Failure(line)
    enhanced = re.match(r"^\s*\d\.\d{1,3}\.\d{1,3}\b", text)
    about_address = at_recipient and (
        bool(_RECIPIENT_CODES.match(text)) if enhanced else code in (550, 551, 553)
    )
    return Failure(line, final=True, refused=about_address)


# Mailgun answers 400 for a whole call when a 'to' address is invalid:
# "'to' parameter is not a valid address. please check documentation";
# SparkPost 422: "Invalid recipient address.email: …".
_INVALID_ADDRESS = re.compile(
    r"\bto\b.{0,40}not a valid address|invalid recipient address", re.IGNORECASE
)


def classify(error):
    """The Failure an exception raised while sending to one reader means,
    as the SMTP RFCs and the providers document their answers:

    - SMTP: a 5xx refusal of the recipient's address is final and counts
      towards HARD_BOUNCE_LIMIT; a 5xx about our sender or the message
      fails that message only; 4xx, dropped connections and timeouts are
      retried; a connection lost after the whole message was sent is
      ambiguous (retried, flagged).
    - An email provider's API (django-anymail): an address the provider
      refuses or calls invalid is final and suppressed; 429 (slow down) and
      401/403 (our credentials) hold the batch; 5xx, other 4xx and network
      errors are retried (a read timeout or a 502/504 is ambiguous: the
      call may have gone through); a success answer that cannot be read
      counts as sent, flagged ambiguous.
    - Anything else (a cache error in the pace, a bug) is retried and logged.
    """
    if isinstance(error, AmbiguousSend):
        return Failure(f"ambiguous: {error}", reconnect=True, ambiguous=True)
    if isinstance(error, ProviderAnswer):
        text = " ".join(str(error).split())
        if error.refused:
            return Failure(
                f"refused by the provider: {text}", final=True, refused=True, invalid=True
            )
        if error.sent:
            return Failure(text, sent=True, ambiguous=True)
        return Failure(f"failed at the provider: {text}")
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(error.recipients.values()))
        return _smtp_reply(code, text, at_recipient=True)
    if isinstance(error, smtplib.SMTPDataError):
        return _smtp_reply(error.smtp_code, error.smtp_error, at_recipient=False)
    if isinstance(error, UnicodeError):
        # A non-ASCII local part needs SMTPUTF8, which this path does not speak.
        return Failure(
            "553 address cannot be sent without SMTPUTF8", final=True, refused=True, reset=True
        )
    if AnymailError is not None and isinstance(error, AnymailError):
        return _provider_answer(error)
    if isinstance(error, smtplib.SMTPAuthenticationError | smtplib.SMTPSenderRefused):
        return Failure(f"{error.smtp_code} {_text(error.smtp_error)}", hold=True, reset=True)
    if isinstance(error, OSError | smtplib.SMTPException):
        # The connection is gone or the server is in trouble: retry this
        # reader later; reconnect for the next one.
        return Failure(str(error) or type(error).__name__, reconnect=True)
    return Failure(f"{type(error).__name__}: {error}", reset=True, unexpected=True)


def _provider_answer(error):
    status = getattr(error, "status_code", None)
    text = " ".join(str(error).split())
    if isinstance(error, AnymailRecipientsRefused):
        return Failure(f"refused by the provider: {text}", final=True, refused=True, invalid=True)
    if status is None:  # No answer: a network error or a timeout.
        cause = repr(error.__cause__)
        reached = not any(
            sign in cause for sign in ("NewConnectionError", "ConnectTimeout", "NameResolution")
        )
        return Failure(f"no answer from the provider: {text}", reconnect=True, ambiguous=reached)
    if 200 <= status < 300:  # Accepted, in words we could not read.
        return Failure(f"{status} from the provider, unreadable: {text}", sent=True, ambiguous=True)
    if status in (401, 403, 429):
        return Failure(f"{status} from the provider: {text}", hold=True)
    if 400 <= status < 500 and _INVALID_ADDRESS.search(text):
        return Failure(f"{status} invalid address: {text}", final=True, refused=True, invalid=True)
    return Failure(f"{status} from the provider: {text}", ambiguous=status in (502, 504))


def _flush(outcome, streak):
    """The failures of a streak that did not turn out to be the batch's
    problem are their readers' own."""
    for item, failure in streak:
        if failure.final:
            _fail(outcome, item, failure)
        else:
            _retry(outcome, item, failure.text)
    streak.clear()


def _hold(outcome, items, error):
    """Back to pending, due after a pause, without spending an attempt."""
    outcome.held = outcome.held or error
    delay = conf.duration("RETRY_BACKOFF").total_seconds() * 4
    at = timezone.now() + timedelta(seconds=delay * random.uniform(0.75, 1.25))
    for item in items:
        item.next_attempt_at = at
        item.error = f"held: {error}"[:500]
        outcome.retry.append(item)


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
    """At most `rate` (default SUBSCRIPTIONS_MAX_RATE) a second across all
    workers — messages, or with name="calls" API calls — counted per second
    in the shared cache."""

    def __init__(self, rate=None, name="pace"):
        rate = conf.MAX_RATE if rate is None and name == "pace" else rate
        # At least one a second: the counter is per second.
        self.rate = max(1, int(rate)) if rate else None
        self.name = name
        self.cache = caches[conf.CACHE]

    def wait(self, deadline=None, n=1):
        """Take n slots (at most a second's worth); False if they do not
        come before `deadline` (monotonic)."""
        if not self.rate:
            return True
        n = min(max(1, n), self.rate)
        while True:
            now = time.time()
            key = f"subscriptions:{self.name}:{int(now)}"
            self.cache.add(key, 0, timeout=5)
            taken = self.cache.incr(key, n)
            if taken <= self.rate:
                return True
            self.cache.decr(key, n)  # not ours: leave the count as it was
            pause = int(now) + 1 - now
            if deadline is not None and time.monotonic() + pause > deadline:
                return False
            time.sleep(pause)


# A row's error while it waits for the next day's quota (the admin counts them).
QUOTA_WAIT = "quota: waiting for tomorrow's daily cap"


def daily_cap(day):
    """Messages that may go out on `day` (a UTC date), across all workers:
    on the warm-up's days (SUBSCRIPTIONS_WARMUP, from WARMUP_START) that
    day's figure, else DAILY_CAP; None for no cap."""
    schedule = conf.WARMUP or []
    if isinstance(schedule, str):
        schedule = [int(part) for part in schedule.replace(",", " ").split()]
    start = conf.WARMUP_START
    if schedule and start:
        if isinstance(start, str):
            start = datetime.fromisoformat(start).date()
        elif isinstance(start, datetime):
            start = start.date()
        age = (day - start).days
        if age < len(schedule):
            return int(schedule[max(0, age)])
    return int(conf.DAILY_CAP) if conf.DAILY_CAP else None


class Quota:
    """Today's (UTC) share of the daily cap, counted in the shared cache
    across all workers. A count that races past the cap is given back, so
    the cap is never exceeded."""

    def __init__(self):
        self.cache = caches[conf.CACHE]
        self.day = timezone.now().astimezone(UTC).date()
        self.cap = daily_cap(self.day)
        self.key = f"subscriptions:quota:{self.day.isoformat()}"

    def take(self, n):
        """How many of n messages may go today (they are counted)."""
        if self.cap is None:
            return n
        self.cache.add(self.key, 0, timeout=3 * 24 * 3600)
        total = self.cache.incr(self.key, n)
        granted = max(0, min(n, self.cap - (total - n)))
        if granted < n:
            self.cache.decr(self.key, n - granted)
        return granted

    def give(self, n):
        """Messages counted but not sent after all."""
        if self.cap is not None and n:
            with contextlib.suppress(Exception):
                self.cache.decr(self.key, n)

    def used(self):
        return int(self.cache.get(self.key) or 0)

    def tomorrow(self):
        return datetime.combine(self.day + timedelta(days=1), day_start(), tzinfo=UTC)


def _wait_for_quota(outcome, items, at):
    """Back to pending until `at` (the next day), without spending an attempt."""
    for item in items:
        item.next_attempt_at = at + timedelta(seconds=random.uniform(0, 60))
        item.error = QUOTA_WAIT
        outcome.retry.append(item)
