"""The app's settings, with their defaults, in one place.

A site changes one by defining ``SUBSCRIPTIONS_<NAME>`` in its settings;
``conf.NAME`` reads it on first use and keeps it until a setting changes
(Django's setting_changed signal, which ``override_settings`` and the test
settings fixture send), so changed settings are seen at once, and a batch
reading settings thousands of times a second does not pay Django's
settings lookup (an exception for each setting left at its default) each
time.
"""

import functools
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS = {
    # Dotted path to a callable returning (key, label) pairs, or (key, label,
    # name) triples where CSV files use `name` (a slug) for the topic: what
    # readers may follow. Keys must never change (follows keep them). None
    # means readers can only follow everything.
    "TOPICS": None,
    # Dotted path to a callable search(query="", keys=None, limit=20) returning
    # (key, label) pairs: those with the given keys, or at most `limit` whose
    # label matches `query` (for an empty query: the ones to suggest). Lets the
    # pages offer thousands of topics without listing them; None: the TOPICS
    # list is searched in Python.
    "TOPIC_SEARCH": None,
    # How long the link in a confirmation email works (timedelta or seconds).
    "CONFIRM_MAX_AGE": timedelta(days=7),
    # How long unsubscribe and preferences links work; None: for ever (links
    # in old emails must keep letting readers leave).
    "LINK_MAX_AGE": None,
    # How long the emailed link to download or erase one's data works.
    "DATA_LINK_MAX_AGE": timedelta(hours=1),
    # A pending address gets at most one confirmation email per window (a timedelta).
    "CONFIRMATION_WINDOW": timedelta(hours=1),
    # A pending address gets one reminder to confirm this long after its
    # confirmation email (timedelta or seconds), then nothing; never one that
    # asked more than twice this long ago (a backlog is not mailed out of the
    # blue). None: no reminders.
    "REMIND_AFTER": timedelta(days=3),
    # Pending addresses whose confirmation email is older than this are
    # deleted (data minimisation; timedelta or seconds). None: kept.
    "PENDING_MAX_AGE": timedelta(days=30),
    # django-ratelimit rates for POST /subscribe/ ("count/period"); None: off.
    "RATELIMIT_IP": "20/h",
    "RATELIMIT_EMAIL": "5/h",
    # Sender of every email; None: DEFAULT_FROM_EMAIL.
    "FROM_EMAIL": None,
    # Name and absolute address of the site, for emails and consent records;
    # None: settings.SITE_NAME and settings.SITE_URL.
    "SITE_NAME": None,
    "SITE_URL": None,
    # Delivery.
    # The sender's postal address, printed at the foot of every post email.
    "POSTAL_ADDRESS": "",
    # Reply-To of post emails; None: no Reply-To.
    "REPLY_TO": None,
    # An address that unsubscribes by email, added to List-Unsubscribe; None: HTTPS only.
    "UNSUBSCRIBE_MAILTO": None,
    # What a post email holds: "summary" (the post's summary and a link) or "full".
    "EMAIL_CONTENT": "summary",
    # Seconds between a post going live and its email starting to go out:
    # the undo window, in which an editor can cancel the mailing. 0: at once.
    "SEND_DELAY": 60,
    # Readers per fan-out chunk, and messages per batch task (over
    # SMTP_CONNECTIONS connections, or as few provider calls as its limit
    # allows: 1,000 fills one Mailgun or SparkPost call, two Postmark
    # calls). Fewer, larger chunks also mean fewer
    # queries per reader (a chunk and a batch each cost a fixed number).
    "BATCH_SIZE": 1000,
    # A claim older than this belongs to a dead worker: the sweeper takes it back.
    "CLAIM_TIMEOUT": timedelta(minutes=5),
    # A batch holding a claim rewrites a key in the shared cache that lives
    # this long (heartbeat.py): once it is gone, the sweeper takes the claim
    # back — seconds after a worker dies, not CLAIM_TIMEOUT. None: no
    # heartbeats (claims are taken back after CLAIM_TIMEOUT only).
    "HEARTBEAT": timedelta(seconds=10),
    # Transient SMTP errors: retried after RETRY_BACKOFF × 2^(attempt-1) (±50 %
    # jitter, at most RETRY_BACKOFF_MAX), until MAX_ATTEMPTS.
    "RETRY_BACKOFF": timedelta(seconds=30),
    "RETRY_BACKOFF_MAX": timedelta(hours=1),
    "MAX_ATTEMPTS": 8,
    # Addresses refused for good (5xx) this many times are suppressed.
    "HARD_BOUNCE_LIMIT": 2,
    # A ceiling in messages per second across all workers (a provider's
    # quota); None: as fast as the mail server takes them.
    "MAX_RATE": None,
    # An email provider's batch API (providers.py: Mailgun, Postmark,
    # SparkPost): readers per API call; None: the provider's own limit
    # (Mailgun 1,000, Postmark 500, SparkPost 1,000); 1: one call per reader.
    "RECIPIENTS_PER_CALL": None,
    # A ceiling in a provider's API calls per second across all workers
    # (over SMTP a "call" is a group of up to 8 x SMTP_CONNECTIONS x
    # SMTP_WINDOW messages, SMTP_CONNECTIONS x 8 without CHUNKING: MAX_RATE
    # is the setting there); None: none.
    "CALLS_PER_SECOND": None,
    # Messages per day (UTC) across all workers; None: no cap. What does not
    # fit waits, pending, for the next day.
    "DAILY_CAP": None,
    # A new sending domain's warm-up: the daily cap of each day from
    # WARMUP_START (a date, "YYYY-MM-DD"), e.g. [500, 1000, 2000, 5000];
    # after the last day, DAILY_CAP. None: no warm-up.
    "WARMUP": None,
    "WARMUP_START": None,
    # SMTP connections each batch sends over at once (each pipelined where
    # the server offers PIPELINING): more hide a distant relay's latency.
    "SMTP_CONNECTIONS": 4,
    # Messages in flight at once on each SMTP connection where the server
    # offers PIPELINING and CHUNKING (RFC 3030: BDAT, no wait for a 354).
    # A killed worker may repeat up to SMTP_CONNECTIONS x SMTP_WINDOW
    # messages. 0: never use CHUNKING.
    "SMTP_WINDOW": 64,
    # The shared cache (Redis) holding the send journal and the pace counter.
    "CACHE": "default",
    # Digests go out at this hour of the site's time zone; weekly ones on
    # this weekday (0 = Monday).
    "DIGEST_HOUR": 7,
    "DIGEST_WEEKDAY": 0,
    # Engagement stats (stats.py). Off: emails carry no pixel and no
    # rewritten links, and nothing is recorded.
    "STATS": False,
    # With STATS on: count each reader's opens and clicks (a row per event,
    # with the reader) unless they opt out on their preferences page. Off:
    # hourly counters per mailing and link only, with no reader in them.
    "STATS_PER_READER": False,
    # An open or click this soon after the message was sent is a machine's
    # (mail security scanners fetch every link on arrival).
    "STATS_MACHINE_SECONDS": 10,
    # This many different links of one message clicked within
    # STATS_BURST_SECONDS (or all of them, when it has fewer) is a machine.
    "STATS_BURST_LINKS": 3,
    "STATS_BURST_SECONDS": 5,
    # Pixel and redirect requests recorded per client IP (django-ratelimit
    # rate); past it they still work but are not counted. None: no limit.
    "STATS_RATELIMIT": "300/h",
}


class Conf:
    def __getattr__(self, name):
        # Only called for what is not in the instance's __dict__ yet.
        if name not in DEFAULTS:
            raise AttributeError(name)
        value = self.__dict__[name] = getattr(settings, f"SUBSCRIPTIONS_{name}", DEFAULTS[name])
        return value

    def forget(self, **kwargs):
        """Read every setting again on next use (connected to setting_changed)."""
        self.__dict__.clear()

    @property
    def confirm_max_age(self):
        return _duration(self.CONFIRM_MAX_AGE)

    def duration(self, name):
        """A duration setting as a timedelta (settings may give seconds)."""
        return _duration(getattr(self, name))

    @functools.cached_property
    def list_id(self):
        """The List-Id (RFC 2919) and the domain of Message-IDs: the site's host."""
        return urlsplit(self.site_url).hostname or "localhost"

    @functools.cached_property
    def from_email(self):
        return self.FROM_EMAIL or settings.DEFAULT_FROM_EMAIL

    @functools.cached_property
    def site_name(self):
        return self.SITE_NAME or getattr(settings, "SITE_NAME", "")

    @functools.cached_property
    def site_url(self):
        return (self.SITE_URL or getattr(settings, "SITE_URL", "")).rstrip("/")

    def absolute_url(self, path):
        return self.site_url + path

    def _provided_topics(self):
        if not self.TOPICS:
            return []
        return [tuple(str(part) for part in topic) for topic in import_string(self.TOPICS)()]

    def topics(self):
        """[(key, label), …] from the host site's provider."""
        return [(topic[0], topic[1]) for topic in self._provided_topics()]

    def topic_names(self):
        """{key: name in CSV files}: the provider's third item when it gives
        one (a slug, which may change while the key does not), else the key."""
        return {
            topic[0]: (topic[2] if len(topic) > 2 else topic[0])
            for topic in self._provided_topics()
        }

    def search_topics(self, query="", limit=20):
        """At most `limit` (key, label) pairs matching `query`; for an empty
        query, the provider's suggestions."""
        query = " ".join(str(query).split())[:100]
        if not self.TOPICS:
            return []
        if self.TOPIC_SEARCH:
            found = import_string(self.TOPIC_SEARCH)(query=query, limit=limit)
            return [(str(key), str(label)) for key, label in found][:limit]
        folded = query.casefold()
        return [(k, label) for k, label in self.topics() if folded in label.casefold()][:limit]

    def topic_labels(self, keys):
        """{key: label} for those of `keys` the provider knows."""
        keys = {str(key) for key in keys}
        if not keys or not self.TOPICS:
            return {}
        if self.TOPIC_SEARCH:
            found = import_string(self.TOPIC_SEARCH)(keys=sorted(keys))
        else:
            found = self.topics()
        return {str(key): str(label) for key, label in found if str(key) in keys}


def _duration(value):
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


conf = Conf()
setting_changed.connect(conf.forget, dispatch_uid="subscriptions.conf")
