"""What is sent, when, and in what order: the orchestration of every email.

The tables (models.py) hold the state and its changes; emails.py renders;
transports.py sends a batch and says what happened. This module ties them
together and is the only one that queues Celery tasks (tasks.py holds their
one-line wrappers around the functions here).

Flow of one post: announce() snapshots its email into a Mailing and queues
fan_out(), which records one Delivery per matching reader, a chunk at a
time, and queues send_mailing_batch() per chunk. A batch claims its due
deliveries, hands them to the transport and records each reader's outcome;
what is left (retries) is queued again. Digest readers' deliveries wait for
make_digests() and send_digest_batch(). sweep() (beat, every few seconds)
puts back, within seconds, whatever a dead worker or a lost broker left
behind.

Every function that runs as a task is safe to run twice or on two workers
at once: fan-out resumes from its cursor and its rows are unique per
(mailing, reader); batches claim their rows with a conditional update, so a
second run finds nothing to send.
"""

import hashlib
import logging
import time
from datetime import timedelta

from django.core.cache import caches
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from . import emails, heartbeat, rediscache, tasks, transports
from .conf import conf
from .heartbeat import heartbeats
from .models import (
    MAX_ID,
    Correction,
    CorrectionDelivery,
    Delivery,
    Digest,
    Mailing,
    Subscriber,
    _due,
)

logger = logging.getLogger(__name__)


def enqueue_after_commit(task, *args, countdown=None):
    """Queue `task(*args)` once the transaction commits, so the worker finds
    the rows. Robust: a broker outage is logged, not turned into an error
    page for a reader whose sign-up is already saved (an editor can resend
    the confirmation from the admin), and for deliveries the sweeper
    queues the work again."""

    _after_commit(task.apply_async, args, countdown=countdown)


def _after_commit(function, *args, **kwargs):
    """Call `function(*args, **kwargs)` once the transaction commits; an
    error it raises is logged (robust), not raised."""

    def enqueue():  # Not a partial: Django logs a robust hook's __qualname__.
        function(*args, **kwargs)

    transaction.on_commit(enqueue, robust=True)


# Readers: sign-up, confirmation and welcome emails.


def subscribe(email, *, consent, name="", frequency=None, topics=()):
    """Record a sign-up (SubscriberQuerySet.subscribe) and ask the address
    to confirm it. Answers the same whatever the address's state: the
    caller cannot tell, so neither can the reader's browser.

    A new address is one INSERT, committed on its own (no transaction
    around it: the write lock is held for the statement alone), before its
    confirmation is queued."""
    subscriber = Subscriber.objects.subscribe(
        email, consent=consent, name=name, frequency=frequency, topics=topics
    )
    if getattr(subscriber, "confirmation_claimed", False):  # a new address
        _confirm_after_commit(subscriber.pk)
    elif subscriber.status == Subscriber.Status.PENDING:
        request_confirmation(subscriber)
    return subscriber


def request_confirmation(subscriber):
    """Queue a confirmation email unless one went out within the window
    (Subscriber.claim_confirmation); returns whether one was queued."""
    if not subscriber.claim_confirmation():
        return False
    _confirm_after_commit(subscriber.pk)
    return True


def queue_confirmations(subscribers):
    """Queue a confirmation email to each of these new pending subscribers
    (an import: their confirmation_sent_at is set already)."""
    for subscriber in subscribers:
        _confirm_after_commit(subscriber.pk)


# Confirmation emails wait in a Redis list of subscriber ids (in the shared
# cache, beside the broker's queues) for one task that sends them all:
# publishing a Celery task was the biggest part of a sign-up's time (~1 ms,
# where pushing an id is ~0.1 ms). The bell is set while such a task is
# queued or starting: the sign-up that sets it queues the task, those behind
# it only push their id. The task rings the bell off before it reads the
# list, so an id pushed after its last read rings again and queues the next
# one. The bell expires, so a task the broker lost is queued again by the
# next sign-up, or by the sweeper within SLOW_SWEEP seconds; the ids are as
# safe as a queued task was (both live in Redis), and the sign-up itself is
# in the database before any of this.
CONFIRMATIONS = "subscriptions:confirmations"
CONFIRMATIONS_BELL = "subscriptions:confirmations:bell"
BELL_SECONDS = 30


def _confirm_after_commit(subscriber_id):
    """Email `subscriber_id` their confirmation once the transaction
    commits (robust, as enqueue_after_commit)."""
    _after_commit(_push_confirmation, subscriber_id)


# Push the id (KEYS[1]) and ring the bell (KEYS[2]) in one command; 1 when
# the bell was silent (so a task must be queued).
_PUSH = """
redis.call('RPUSH', KEYS[1], ARGV[1])
if redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""


def _push_confirmation(subscriber_id):
    redis, cache = _confirmations_redis()
    if redis is None:  # not django-redis: a task of its own
        tasks.send_confirmation.apply_async((subscriber_id,))
        return
    keys = [cache.make_key(CONFIRMATIONS), cache.make_key(CONFIRMATIONS_BELL)]
    if rediscache.script(redis, _PUSH)(keys=keys, args=[subscriber_id, BELL_SECONDS]):
        tasks.send_confirmations.apply_async()


def _confirmations_redis():
    """(redis-py client, cache) of the shared cache when it is django-redis's
    plain client; (None, cache) otherwise."""
    cache = caches[conf.CACHE]
    return rediscache.client(cache), cache


def _ring_for_confirmations():
    """Confirmations waiting with no task on its way (the broker lost it and
    no sign-up came since): queue one (sweep, at most every SLOW_SWEEP)."""
    redis, cache = _confirmations_redis()
    if redis is None or not redis.llen(cache.make_key(CONFIRMATIONS)):
        return
    if redis.set(cache.make_key(CONFIRMATIONS_BELL), 1, nx=True, ex=BELL_SECONDS):
        enqueue_after_commit(tasks.send_confirmations)


# A task that finds more confirmations waiting than this queues one more
# task before it starts, which does the same: in a burst of sign-ups (a
# viral article's), every free worker joins in, each taking ids from the
# same list (LPOP: each id goes to one of them), instead of one worker
# sending them all one after the other. At most one task more than the
# workers busy with the list waits in the queue.
CONFIRMATIONS_PER_WORKER = 20


def _call_for_help():
    try:
        tasks.send_confirmations.apply_async()
    except Exception:  # noqa: BLE001 - the broker is down: this task goes on alone
        logger.warning("Could not queue a second confirmations task", exc_info=True)


def send_confirmations():
    """Send the confirmation emails waiting in the list (the task the bell
    queued); returns how many ids it took. A long line calls in another
    worker (CONFIRMATIONS_PER_WORKER). One id at a time, so a worker
    killed here loses at most the one it was sending (as a task of its own
    did). A mail server that is down puts the id back first in line and
    raises, so the task is tried again later."""
    redis, cache = _confirmations_redis()
    if redis is None:
        return 0
    key = cache.make_key(CONFIRMATIONS)
    redis.delete(cache.make_key(CONFIRMATIONS_BELL))
    if redis.llen(key) > CONFIRMATIONS_PER_WORKER:
        _call_for_help()
    taken = 0
    while (subscriber_id := redis.lpop(key)) is not None:
        taken += 1
        try:
            send_confirmation(int(subscriber_id))
        except tasks.TRANSIENT:
            redis.lpush(key, subscriber_id)
            raise
        except Exception:  # one address's problem: the others still go
            logger.exception("Confirmation email to subscriber %s failed", subscriber_id)
    return taken


def confirm(subscriber):
    """Pending → confirmed, and a welcome email; returns whether this call
    confirmed."""
    if not subscriber.confirm():
        return False
    enqueue_after_commit(tasks.send_welcome, subscriber.pk)
    return True


# These re-read the row, so one that runs late, or twice, acts on the state
# at that moment: a confirmation goes only to an address still pending, a
# welcome only to a confirmed one.


def _email_reader(subscriber_id, render, **state):
    subscriber = Subscriber.objects.filter(pk=subscriber_id, **state).first()
    if subscriber:
        render(subscriber).send()


def send_confirmation(subscriber_id):
    _email_reader(subscriber_id, emails.confirmation, status=Subscriber.Status.PENDING)


def send_welcome(subscriber_id):
    _email_reader(subscriber_id, emails.welcome, status=Subscriber.Status.CONFIRMED)


# Pending addresses: one reminder, then, after PENDING_MAX_AGE, deletion.
# Beat runs both every hour.

REMINDERS_PER_RUN = 10_000


def remind_pending(now=None):
    """Queue a reminder to each pending address whose confirmation email went
    out REMIND_AFTER ago (but not twice that: a backlog from before is left
    alone) and that was never reminded; returns how many. Each address is
    marked reminded before its task is queued, so it gets one reminder at
    most, however often this runs."""
    if not conf.REMIND_AFTER:
        return 0
    now = now or timezone.now()
    after = conf.duration("REMIND_AFTER")
    ids = Subscriber.objects.claim_reminders(now - after, now - 2 * after, REMINDERS_PER_RUN)
    for pk in ids:
        enqueue_after_commit(tasks.send_reminder, pk)
    if ids:
        logger.info("Reminded %d pending addresses to confirm", len(ids))
    _note_housekeeping("reminded", len(ids))
    return len(ids)


def send_reminder(subscriber_id):
    _email_reader(subscriber_id, emails.reminder, status=Subscriber.Status.PENDING)


def delete_stale_pending(now=None):
    """Delete the addresses still pending PENDING_MAX_AGE after their
    confirmation email (data minimisation); returns how many, and logs it."""
    if not conf.PENDING_MAX_AGE:
        return 0
    before = (now or timezone.now()) - conf.duration("PENDING_MAX_AGE")
    deleted = 0
    while count := Subscriber.objects.delete_pending(before):
        deleted += count
    if deleted:
        logger.info(
            "Deleted %d addresses pending since before %s (never confirmed)",
            deleted,
            before.isoformat(timespec="minutes"),
        )
    _note_housekeeping("deleted", deleted)
    return deleted


HOUSEKEEPING_KEY = "subscriptions:housekeeping"


def _note_housekeeping(what, count):
    """Keep the last run's count in the shared cache, for the admin."""
    try:
        cache = caches[conf.CACHE]
        notes = cache.get(HOUSEKEEPING_KEY) or {}
        notes[what] = (timezone.now(), count)
        cache.set(HOUSEKEEPING_KEY, notes, None)
    except Exception:  # noqa: BLE001 - a note for the admin is not worth failing the job
        logger.warning("Could not note the %s count", what, exc_info=True)


def housekeeping():
    """{"reminded"|"deleted": (when, count)} of the last runs, for the admin."""
    try:
        return caches[conf.CACHE].get(HOUSEKEEPING_KEY) or {}
    except Exception:  # noqa: BLE001 - the cache is down: say nothing
        return {}


# Readers' data: the download and the erasure open only from a short-lived
# link sent to the address (tokens.DATA), not from the preferences link
# that every email carries.


def request_data_link(subscriber):
    """Queue an email with a link to download or erase the reader's data."""
    enqueue_after_commit(tasks.send_data_link, subscriber.pk)


def send_data_link(subscriber_id):
    _email_reader(subscriber_id, emails.data_link)


# Posts.


def announce(post, live_since=None, send_at=None):
    """(mailing, created): the first call for a post snapshots its email
    and queues the fan-out after commit; later calls return the same.

    The audience is the readers confirmed when the post went live: now, or
    `live_since` for a post announced late (a host site's sweeper, when the
    announce after its publication was lost).

    Nobody is mailed before SEND_DELAY seconds from now (the undo window:
    Mailing.cancel), nor before `send_at` when it is later (a scheduled
    send)."""
    post_key = Mailing.key_for(post)
    existing = Mailing.objects.filter(post_key=post_key).first()
    if existing:
        return existing, False
    snapshot = emails.post_snapshot(post)
    now = timezone.now()
    if live_since is not None:
        snapshot["created_at"] = min(live_since, now)
    snapshot["send_at"] = max(send_at or now, now + timedelta(seconds=conf.SEND_DELAY))
    armed = _wait(snapshot["send_at"]) <= _longest_countdown()
    if armed:
        # A task is waiting for the send time: the sweeper leaves it alone.
        snapshot["progress_at"] = snapshot["send_at"]
    try:
        with transaction.atomic():
            mailing = Mailing.objects.create(post_key=post_key, **snapshot)
    except IntegrityError:  # Announced at the same moment elsewhere.
        return Mailing.objects.get(post_key=post_key), False
    if armed:
        _queue_fan_out(mailing)
    return mailing, True


def _wait(moment):
    return max(0.0, (moment - timezone.now()).total_seconds())


def _longest_countdown():
    # As retry_countdown: no task waits longer than CLAIM_TIMEOUT in the
    # broker (its visibility timeout would deliver it twice).
    return conf.duration("CLAIM_TIMEOUT").total_seconds()


def _queue_fan_out(mailing):
    wait = min(_wait(mailing.send_at), _longest_countdown())
    enqueue_after_commit(tasks.fan_out, mailing.pk, countdown=wait + 0.1 if wait else None)


def cancel(mailing):
    """An editor takes back a mailing inside its undo window (or before its
    scheduled time): nobody is mailed. Returns whether it was cancelled."""
    return mailing.cancel()


def start_scheduled():
    """Queue the fan-out of each mailing whose send time comes within the
    longest countdown a task may wait in the broker, and which has no task
    waiting for it yet (a send scheduled hours ahead). Each is armed once:
    progress_at moves to its send time with a conditional update, so two
    sweepers never queue it twice. A task lost after that (a restarted
    broker) is found by sweep() once the send time is CLAIM_TIMEOUT past.
    Returns the ids queued."""
    soon = timezone.now() + timedelta(seconds=_longest_countdown())
    queued = []
    for mailing in Mailing.objects.filter(
        status=Mailing.Status.QUEUED, send_at__lte=soon, progress_at__lt=F("send_at")
    ):
        armed = Mailing.objects.filter(pk=mailing.pk, progress_at__lt=F("send_at")).update(
            progress_at=F("send_at")
        )
        if armed:
            _queue_fan_out(mailing)
            queued.append(mailing.pk)
    return queued


def fan_out(mailing_id, chunks=None):
    """Record a Delivery for every matching reader and queue a batch per
    chunk of BATCH_SIZE readers (Mailing.add_deliveries).

    With `chunks`, stop after that many chunks and queue the fan-out again
    to go on: the first batches are queued before it, so the first readers
    get the post while the rest are still being listed, even with one
    worker. A batch queued twice finds its deliveries already claimed.
    """
    mailing = Mailing.objects.sending().filter(pk=mailing_id).first()
    if not mailing:
        return  # Cancelled, paused, done or deleted.
    if not mailing.start():
        if mailing.send_at > timezone.now():
            # Woken before its send time (another machine's clock, a task
            # redelivered early): wait again rather than for the sweeper.
            _queue_fan_out(mailing)
        return
    while chunk := mailing.add_deliveries():
        first, last, any_instant = chunk
        if any_instant:
            enqueue_after_commit(tasks.send_mailing_batch, mailing.pk, first, last)
        if chunks is not None:
            chunks -= 1
            if chunks <= 0:
                enqueue_after_commit(tasks.fan_out, mailing.pk)
                return
    mailing.finish_if_done()


def send_mailing_batch(mailing_id, first, last):
    """Send the due pending deliveries of readers with ids first..last (at
    most BATCH_SIZE, over one connection), then queue what is left of the
    range: now if due, or when the next retry is due. Returns the number
    of messages sent."""
    mailing = Mailing.objects.sending().filter(pk=mailing_id).first()
    if not mailing:
        return 0  # Paused (resume queues it again), done or deleted.
    rows = mailing.deliveries_between(first, last)
    claimed, outcome = _send_batch(rows, "delivery", lambda claimed: (emails.post(mailing), []))
    if claimed and mailing.moved(outcome):
        # Once per hold, not at each try: whatever watches the site's error
        # log hears of it while every reader waits.
        logger.error(
            "Mailing %s (%s) is held, its readers waiting without spending an attempt: %s",
            mailing.pk,
            mailing.title,
            outcome.held,
        )
    if not _queue_rest(rows, tasks.send_mailing_batch, mailing.pk, first, last):
        mailing.finish_if_done()
    return len(outcome.sent)


def _send_batch(rows, kind, prepare, record_also=None):
    """The pipeline every batch shares: claim up to BATCH_SIZE due rows of
    `rows` (Deliveries or Digests); prepare(claimed) gives (build, skip):
    send build(row, raw) to each claimed row's reader but those in `skip`;
    record each outcome on the ledger (with record_also(outcome), in the
    same transaction) and suppress readers refused for good too often.
    Returns (claimed rows, Outcome)."""
    claimed = rows.claim(conf.BATCH_SIZE)
    if not claimed:
        return [], transports.Outcome()
    claim = claimed[0].claim
    heartbeats.hold(claim)  # until the outcome is recorded: the sweeper leaves it alone
    try:
        build, skip = prepare(claimed)
        skipped = {i.pk for i in skip}
        # Rows an earlier batch sent before the sweeper took them back (it
        # believed that batch dead): recorded as sent, not sent again.
        done = [i for i in _journaled(kind, claimed) if i.pk not in skipped]
        skipped |= {i.pk for i in done}
        outcome = transports.deliver(
            kind,
            [i for i in claimed if i.pk not in skipped],
            build,
            # Readers still confirmed whose row this batch still holds.
            recheck=lambda ids: rows.model.objects.still_held(claim, ids),
        )
        outcome.skipped += skip
        outcome.sent += done
        with transaction.atomic():
            rows.model.objects.record(outcome, claim, claimed=len(claimed))
            if record_also:
                record_also(outcome)
    finally:
        heartbeats.drop(claim)
    Subscriber.objects.suppress([i.subscriber_id for i in outcome.invalid])
    Subscriber.objects.suppress_bouncing([i.subscriber_id for i in outcome.failed if i.permanent])
    return claimed, outcome


def _journaled(kind, claimed):
    """The claimed rows the send journal says were sent already.

    Only a row that went back to pending from a claim can be sent and not
    recorded: the sweeper's release(), a retry and an editor's "retry
    failed" set its next_attempt_at, which a row fresh from the fan-out
    does not have. So a first attempt asks the journal nothing: no round trip
    for most of a mailing, and a key left for the same id by an earlier
    database (restored from a backup; the journal lives a week) does not
    stand for a send nobody made."""
    again = [i.pk for i in claimed if i.next_attempt_at is not None]
    if not again:
        return []
    try:
        sent = transports.journal_sent(kind, again)
    except Exception:  # noqa: BLE001 - the cache is down: nothing is known
        return []
    return [i for i in claimed if i.pk in sent]


def _queue_rest(rows, task, *args):
    """Queue `task(*args)` again for the rows still pending: now if any is
    due, else when the first retry is. Returns whether any is left."""
    left = rows.waiting()
    if left["due"]:
        enqueue_after_commit(task, *args)
    elif left["count"]:
        enqueue_after_commit(task, *args, countdown=retry_countdown(left["next"]))
    return bool(left["count"])


def retry_countdown(next_attempt_at):
    """Seconds until the next retry is due, but at most CLAIM_TIMEOUT: a
    countdown longer than the broker's visibility timeout (an hour on Redis)
    would have the task delivered twice. A task that wakes early finds
    nothing due and waits again."""
    wait = max(0.0, (next_attempt_at - timezone.now()).total_seconds()) + 0.1
    return min(wait, conf.duration("CLAIM_TIMEOUT").total_seconds())


def withdraw(post):
    """Stop mailing `post` (it was unpublished); returns its Mailing, if any."""
    mailing = Mailing.objects.filter(post_key=Mailing.key_for(post)).first()
    if mailing:
        mailing.withdraw()
    return mailing


def resume(mailing):
    """An editor resumes a paused mailing: its work is queued again."""
    if not mailing.resume():
        return False
    _requeue(mailing)
    return True


def retry_failed(mailing):
    """Failed deliveries to readers still confirmed are queued again;
    returns how many."""
    count = mailing.retry_failed()
    if count:
        _requeue(mailing)
    return count


def _requeue(mailing):
    if not Mailing.objects.filter(pk=mailing.pk, fanout_done=True).exists():
        enqueue_after_commit(tasks.fan_out, mailing.pk)
    enqueue_after_commit(tasks.send_mailing_batch, mailing.pk, 0, MAX_ID)


def send_test(mailing, address):
    """The post as readers get it, to `address` (an editor's); recorded
    nowhere, so it never counts as, or stands in for, a delivery."""
    sender = transports.transport()
    sender.connection.send_messages([emails.test_post(mailing, address, sender.raw)])


# Digests.


def make_digests():
    """Create the digests due now and queue their sending; returns how many
    were created."""
    created = Digest.objects.create_due()
    if created:
        enqueue_after_commit(tasks.send_digest_batch, 0, MAX_ID)
    return created


def send_digest_batch(first, last):
    """Send the due pending digests with ids first..last, at most
    BATCH_SIZE, and queue the rest; returns the number sent. A digest's
    deliveries take its outcome."""
    rows = Digest.objects.filter(pk__range=(first, last))
    listed, posts, shown = {}, {}, set()

    def prepare(claimed):
        found_posts, found = Digest.objects.posts_of(claimed)
        posts.update(found_posts)
        listed.update(found)
        _attach_notes(posts)
        shown.update(note.pk for listing in posts.values() for m in listing for note in m.notes)
        follows = Digest.objects.follows_of(claimed)
        labels = conf.topic_labels({key for keys in follows.values() for key in keys})
        # A digest with nothing to list is never sent (its posts were erased).
        return emails.digest(posts, follows, labels), [d for d in claimed if not posts.get(d.pk)]

    def record_also(outcome):
        # A digest's deliveries take its outcome, in the same transaction:
        # a crash between the two would leave them attached to a sent digest.
        Digest.objects.record_listed(outcome, listed)
        # And the corrections made since it read its notes reach its readers.
        sent = [(d.subscriber_id, m.pk) for d in outcome.sent for m in posts.get(d.pk, [])]
        for batch in Correction.objects.add_missed([p for p in sent if p[0]], shown):
            enqueue_after_commit(tasks.send_correction_batch, *batch)

    claimed, outcome = _send_batch(rows, "digest", prepare, record_also=record_also)
    _queue_rest(rows, tasks.send_digest_batch, first, last)
    return len(outcome.sent)


def _attach_notes(posts):
    """Give each Mailing a digest lists its corrections (`notes`), in one
    query: a reader whose digest had not gone when a post was corrected
    reads the note in it instead of getting a correction email."""
    mailings = {m.pk: m for listed in posts.values() for m in listed}
    notes = Correction.objects.notes_for(mailings)
    for pk, mailing in mailings.items():
        mailing.notes = notes.get(pk, [])


# Corrections.


class CorrectionRefused(ValueError):
    """The correction cannot be sent; the message says why, for the editor."""


def correct(mailing, text, editor=""):
    """Email a correction of `mailing` to every reader it was sent to who
    is still subscribed (Correction.recipients), once. The same note for
    the same mailing twice (a double click) is one correction. Returns
    (correction, created); raises CorrectionRefused."""
    text = (text or "").strip()
    if mailing.status != Mailing.Status.DONE:
        raise CorrectionRefused("Only a mailing that has gone out can be corrected.")
    text_hash = hashlib.sha256(text.encode()).hexdigest()
    existing = Correction.objects.filter(mailing=mailing, text_hash=text_hash).first()
    if existing:
        return existing, False
    parts = emails.correction_snapshot(mailing, text)
    try:
        with transaction.atomic():
            correction = Correction.objects.create(
                mailing=mailing,
                text=text,
                text_hash=text_hash,
                created_by=str(editor)[:150],
                subject=parts.subject[:300],
                email_text=parts.text,
                email_html=parts.html,
            )
    except IntegrityError:  # The same note, submitted twice at once.
        return Correction.objects.get(mailing=mailing, text_hash=text_hash), False
    enqueue_after_commit(tasks.fan_out_correction, correction.pk)
    return correction, True


def fan_out_correction(correction_id, chunks=None):
    """As fan_out, for a correction: a CorrectionDelivery per recipient and
    a batch per chunk; with `chunks`, queue itself again to go on."""
    correction = Correction.objects.sending().filter(pk=correction_id).first()
    if not correction:
        return
    while chunk := correction.add_deliveries():
        enqueue_after_commit(tasks.send_correction_batch, correction.pk, *chunk)
        if chunks is not None:
            chunks -= 1
            if chunks <= 0:
                enqueue_after_commit(tasks.fan_out_correction, correction.pk)
                return
    correction.finish_if_done()


def send_correction_batch(correction_id, first, last):
    """As send_mailing_batch, for a correction; returns the number sent."""
    correction = Correction.objects.sending().filter(pk=correction_id).first()
    if not correction:
        return 0
    rows = correction.deliveries_between(first, last)
    claimed, outcome = _send_batch(
        rows, "correction", lambda claimed: (emails.correction(correction), [])
    )
    if claimed:
        correction.moved()
    if not _queue_rest(rows, tasks.send_correction_batch, correction.pk, first, last):
        correction.finish_if_done()
    return len(outcome.sent)


def _sweep_corrections(believed, beat, now, candidates_since):
    """sweep() for corrections: their dead claims taken back (as sweep()
    does a mailing's), then corrections that made no progress since
    `candidates_since` (all in flight, after an emptied cache: None) with
    work due queued again. Returns their ids."""
    dead = _dead_claims(CorrectionDelivery, believed, beat, now)
    if dead:
        ids = list(
            CorrectionDelivery.objects.filter(
                claim__in=dead, status=CorrectionDelivery.Status.SENDING
            ).values_list("pk", flat=True)
        )
        CorrectionDelivery.objects.release(
            ids, transports.journal_sent("correction", ids), now + RELEASE_DELAY
        )
    corrections = Correction.objects.sending()
    if candidates_since is not None:
        corrections = corrections.filter(progress_at__lt=candidates_since)
    requeued = []
    for correction in corrections:
        if correction.finish_if_done() or not correction.has_work_due():
            continue
        correction.moved()
        if not correction.fanout_done:
            enqueue_after_commit(tasks.fan_out_correction, correction.pk)
        enqueue_after_commit(tasks.send_correction_batch, correction.pk, 0, MAX_ID)
        requeued.append(correction.pk)
    return requeued


# Recovery.

# Rows taken back from a claim wait this long before another batch may send
# them: if their batch was alive after all (its heartbeat lost with a
# restarted Redis), it stops sending them within transports.RECHECK_SECONDS
# and journals what it sent meanwhile, which the next batch then skips.
RELEASE_DELAY = timedelta(seconds=2)


def sweep():
    """Put stalled work back in play (beat runs it every few seconds).

    1. Dead claims are taken back: those whose heartbeat is gone
       (heartbeat.py: within HEARTBEAT seconds of a worker's death), or,
       where no heartbeat can be read, those older than CLAIM_TIMEOUT. A
       claim whose heartbeat is there is never taken, however old. Of a
       dead claim's rows, those the send journal says were sent are
       recorded as sent; the rest go back to pending (due RELEASE_DELAY
       later), and their mailing is queued again.
    2. Lost tasks: a mailing queued or sending, with work due (its fan-out
       unfinished, or deliveries due now), gets its fan-out and a batch
       over all its readers queued again when the cache was found emptied
       (a restarted Redis: on one server the queued tasks went with it), or
       when it made no progress for 2 × HEARTBEAT (CLAIM_TIMEOUT without
       heartbeats): a broker of its own that lost them. A queued task that
       was not lost finds its rows claimed already, so the extra tasks send
       nothing twice. Deliveries waiting out a backoff already have a task
       waiting for them: no new chain is started for them.
    3. Digests pending since CLAIM_TIMEOUT ago get a batch queued, checked
       at most once a minute (and at once after an emptied cache).

    A sweep with nothing to do costs three small indexed queries (the
    claims being sent, for deliveries and digests, and the mailings in
    flight that stalled) and two cache round trips. Returns the ids of the
    mailings queued again.
    """
    believed, emptied = heartbeat.watch()
    beat = heartbeat.seconds()
    now = timezone.now()
    released_mailings, released_digests = set(), False
    for model, kind in ((Delivery, "delivery"), (Digest, "digest")):
        dead = _dead_claims(model, believed, beat, now)
        if not dead:
            continue
        fields = ["pk", "mailing_id"] if model is Delivery else ["pk"]
        rows = model.objects.filter(claim__in=dead, status=model.Status.SENDING)
        rows = list(rows.values_list(*fields))
        ids = [row[0] for row in rows]
        model.objects.release(ids, transports.journal_sent(kind, ids), now + RELEASE_DELAY)
        if model is Delivery:
            released_mailings |= {mailing for _, mailing in rows}
        else:
            released_digests = True
    stalled = now - (timedelta(seconds=2 * beat) if beat else conf.duration("CLAIM_TIMEOUT"))
    candidates = Mailing.objects.sending()
    if not emptied:
        candidates = candidates.filter(Q(progress_at__lt=stalled) | Q(pk__in=released_mailings))
    requeued = []
    for mailing in candidates:
        if mailing.finish_if_done():
            continue
        # Released rows are due shortly: their batch waits for them.
        if mailing.pk not in released_mailings and not mailing.has_work_due():
            continue
        mailing.moved()
        _requeue(mailing)
        requeued.append(mailing.pk)
    if released_digests or _digests_stalled(emptied, now):
        enqueue_after_commit(tasks.send_digest_batch, 0, MAX_ID)
    # Scheduled sends and corrections: at most every SLOW_SWEEP seconds (a
    # sweep with nothing to do stays three queries), or at once after an
    # emptied cache.
    slow = _not_swept_lately("scheduled", SLOW_SWEEP)
    if slow or emptied:
        start_scheduled()
        _sweep_corrections(believed, beat, now, None if emptied else stalled)
        _ring_for_confirmations()
    return requeued


SLOW_SWEEP = 10


def _not_swept_lately(name, seconds):
    """Whether the part of the sweep called `name` last ran `seconds` ago
    or more (by the clock, noted in the shared cache); notes that it runs
    now. Two sweepers at once may both run it: each part is safe to run
    twice."""
    cache, key, now = caches[conf.CACHE], f"subscriptions:sweep:{name}", time.time()
    try:
        last = cache.get(key)
        if last is not None and 0 <= now - last < seconds:
            return False
        cache.set(key, now, timeout=3600)
    except Exception:  # noqa: BLE001 - the cache is down: ask the database
        pass
    return True


def _dead_claims(model, believed, beat, now):
    """The claims on `model`'s rows being sent that belong to no live batch."""
    claims = dict(
        model.objects.filter(status=model.Status.SENDING)
        .values_list("claim")
        .annotate(at=Max("claimed_at"))
        .order_by()
    )
    if not claims:
        return []
    alive = heartbeat.alive(claims)
    timeout = now - conf.duration("CLAIM_TIMEOUT")
    # A claim gets a heartbeat within moments of being taken: one younger
    # than a heartbeat's life may not have it yet.
    silent = now - timedelta(seconds=beat) if believed and alive is not None else None
    return [
        claim
        for claim, at in claims.items()
        if (alive is None or claim not in alive)
        and (at is None or at < timeout or (silent is not None and at < silent))
    ]


def _digests_stalled(emptied, now):
    """Whether due digests have waited since CLAIM_TIMEOUT ago (their tasks
    were lost) — asked at most once a minute: the scan is not free while a
    big digest run is in progress — or, after an emptied cache, at all."""
    rows = Digest.objects.filter(_due(), status=Digest.Status.PENDING)
    ask = _not_swept_lately("digests", 60)  # noted after an emptied cache too
    if emptied:
        return rows.exists()
    return ask and rows.filter(created_at__lt=now - conf.duration("CLAIM_TIMEOUT")).exists()
