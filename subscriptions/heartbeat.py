"""Heartbeats: how the sweeper tells a dead batch from a live one in seconds.

A batch that holds a claim (SendableQuerySet.claim) keeps a key in the shared
cache, ``subscriptions:alive:<claim>``, that expires HEARTBEAT seconds after
it was last written. A daemon thread in the worker process writes the keys of
every claim the process holds again every HEARTBEAT / 5 seconds while its
batches run, so the send loop is not touched; a process that dies (SIGKILL,
the OOM killer, a crashed host) stops writing, and HEARTBEAT seconds later its
claims have none. The sweeper takes back only claims whose heartbeat is gone:
never one whose key is there, however old the claim. A heartbeat is kept at
most CLAIM_TIMEOUT: a batch never sends past 80 % of it (transports.deliver),
so a claim that old is a stuck process's, and the sweeper may have it.

A missing key is believed only once the sweeper has watched the cache for
HEARTBEAT seconds without a gap (watch()): a restarted or flushed Redis, or
one out of reach for longer than a key lives, loses every key at once, the
live batches' too, and their threads need a moment to write them again. Where
no heartbeat can be read (HEARTBEAT is None, a cache each process has to
itself, the cache is down), a claim counts as a dead worker's only once it is
older than CLAIM_TIMEOUT, as before heartbeats existed.
"""

import logging
import os
import threading
import time

from django.core.cache import caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache

from .conf import conf

logger = logging.getLogger(__name__)

WATCH_KEY = "subscriptions:alive:watch"


def key(claim):
    return f"subscriptions:alive:{claim}"


def seconds():
    """How long a heartbeat lives, in seconds; None when claims keep none
    (HEARTBEAT is off, or the cache is not shared between processes)."""
    if not conf.HEARTBEAT or isinstance(caches[conf.CACHE], LocMemCache | DummyCache):
        return None
    return conf.duration("HEARTBEAT").total_seconds()


class Heartbeats:
    """The claims this process holds, and the thread that keeps them alive."""

    def __init__(self):
        self.lock = threading.Lock()
        self.held = {}  # claim → time.monotonic() when it was taken
        self.pid = None

    def hold(self, claim):
        """This process now holds `claim`: write its heartbeat at once, and
        keep writing it until drop()."""
        ttl = seconds()
        if ttl is None:
            return
        with self.lock:
            self.held[claim] = time.monotonic()
            if self.pid != os.getpid():  # the first claim here, or a forked child
                self.pid = os.getpid()
                threading.Thread(
                    target=self._run, name="subscriptions-heartbeat", daemon=True
                ).start()
        _write([claim], ttl)

    def drop(self, claim):
        """The batch has recorded its outcome: its heartbeat ends."""
        with self.lock:
            if self.held.pop(claim, None) is None:
                return
        try:
            caches[conf.CACHE].delete(key(claim))
        except Exception:  # noqa: BLE001 - it expires by itself
            logger.warning("Could not end the heartbeat of claim %s", claim)

    def holding(self):
        with self.lock:
            return set(self.held)

    def _run(self):
        while True:
            ttl = seconds() or 10.0
            time.sleep(ttl / 5)
            limit = conf.duration("CLAIM_TIMEOUT").total_seconds()
            now = time.monotonic()
            with self.lock:
                for claim, since in list(self.held.items()):
                    if now - since > limit:  # stuck: let the sweeper have it
                        del self.held[claim]
                claims = list(self.held)
            if claims and seconds():
                _write(claims, ttl)


def _write(claims, ttl):
    try:
        caches[conf.CACHE].set_many({key(claim): 1 for claim in claims}, timeout=ttl)
    except Exception:  # noqa: BLE001 - the thread writes it again soon
        logger.warning("Could not write the heartbeat of %d claims", len(claims))


heartbeats = Heartbeats()


def alive(claims):
    """The claims among `claims` whose heartbeat is there; None when no
    heartbeat can be read (the sweeper then falls back on CLAIM_TIMEOUT)."""
    if seconds() is None:
        return None
    claims = list(claims)
    if not claims:
        return set()
    try:
        found = caches[conf.CACHE].get_many([key(claim) for claim in claims])
    except Exception:  # noqa: BLE001 - the cache is down
        return None
    return {claim for claim in claims if key(claim) in found}


def watch():
    """(believed, emptied), for the sweeper, which calls this on each run.

    believed: a missing heartbeat means a dead batch — the sweeper has found
    its own watch key in the cache for at least HEARTBEAT seconds. The key
    lives 80 % of HEARTBEAT from the last sweep, so it is gone whenever a live
    batch's key may have gone with the cache (a restart, a flush, an outage
    longer than a heartbeat lives): every live batch's thread has then written
    its key again by the time the watch is believed. Sweeps must come more
    often than that (beat runs it every few seconds).

    emptied: the watch key was missing — the cache was emptied (a restarted
    Redis, which on one server also loses the broker's queued tasks) or
    nobody swept for a while.
    """
    ttl = seconds()
    if ttl is None:
        return False, False
    cache = caches[conf.CACHE]
    now = time.time()
    try:
        since = cache.get(WATCH_KEY)
        if since is None:
            cache.set(WATCH_KEY, now, timeout=ttl * 0.8)
            return False, True
        cache.touch(WATCH_KEY, ttl * 0.8)
    except Exception:  # noqa: BLE001 - the cache is down: heartbeats say nothing
        return False, False
    return now - since >= ttl, False
