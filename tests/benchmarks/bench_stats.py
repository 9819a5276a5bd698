"""Engagement stats: what tracking adds to a batch, and what telling a
machine from a person costs per request.

Run with `.venv/bin/python tests/benchmarks/run.py --only stats`. No
database: a post's Mailing and 1,000 readers are built in memory, and each
reader's message is made as a batch makes it (emails.post, raw bytes).

- Rendering 1,000 readers' messages with stats on, beside the same with
  stats off (the pixel, the rewritten links, one signature per reader).
- Classifying one click (the crawler-user-agents list and ours, as one
  regular expression), beside checking the link's two signatures.
"""

import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.common import Row, setup_django

setup_django(migrate=False)

from django.test import RequestFactory, override_settings  # noqa: E402

from subscriptions import emails, stats  # noqa: E402
from subscriptions.models import Mailing, Subscriber  # noqa: E402

READERS = 1000
AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


class Post:
    title = "Report says Sessions and Rosenstein pushed child separations"
    pk = 1
    published_at = None

    def get_absolute_url(self):
        return "/articles/report-says/"

    def email_summary(self):
        return "A new report by the inspector general shows … " * 8

    def topic_links(self):
        return [(f"Person {i}", f"http://127.0.0.1:8000/people/person-{i}/") for i in range(8)]


def timed(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def render_all(mailing, deliveries):
    build = emails.post(mailing)
    for delivery in deliveries:
        build(delivery, True)


def rows(ctx):
    runs = 3 if ctx.quick else 7
    mailing = Mailing(pk=1, **emails.post_snapshot(Post()))
    deliveries = [
        SimpleNamespace(
            subscriber=Subscriber(pk=i, email=f"reader{i}@example.com", key=f"key{i:020d}"),
            subscriber_id=i,
        )
        for i in range(1, READERS + 1)
    ]
    with override_settings(SUBSCRIPTIONS_STATS=False):
        off = timed(lambda: render_all(mailing, deliveries), runs)
    with override_settings(SUBSCRIPTIONS_STATS=True, SUBSCRIPTIONS_STATS_PER_READER=True):
        on = timed(lambda: render_all(mailing, deliveries), runs)

    request = RequestFactory().get("/", HTTP_USER_AGENT=AGENT, REMOTE_ADDR="203.0.113.7")
    link, message = stats.link_token(1, 3), stats.message_token("key", time.time())
    stats.classify_click(request, 0, 100)  # compiles the patterns, remembers this agent
    n = 2000
    classify = timed(lambda: [stats.classify_click(request, 0, 100) for _ in range(n)], runs) / n
    verify = (
        timed(
            lambda: [(stats.load_link(link), stats.load_message(message)) for _ in range(n)], runs
        )
        / n
    )
    # A user agent never seen before goes through every pattern.
    fresh = iter(range(10**9))
    m = 50
    unseen = (
        timed(lambda: [stats.is_machine_agent(f"{AGENT} x{next(fresh)}") for _ in range(m)], runs)
        / m
    )
    return [
        Row(
            f"Render {READERS:,} readers' post emails, stats on",
            on * 1000,
            off * 1000,
            unit="ms",
            reference_label="stats off",
            notes=f"{len(mailing.links)} links rewritten, one pixel, one signature per reader",
            raw={"on_ms": on * 1000, "off_ms": off * 1000},
        ),
        Row(
            "Tell a click's machine from a person, a user agent seen before",
            classify * 1e6,
            verify * 1e6,
            unit="µs",
            reference_label="checking the link's two signatures",
            raw={"classify_us": classify * 1e6, "verify_us": verify * 1e6},
        ),
        Row(
            "… a user agent never seen before (every pattern)",
            unseen * 1e6,
            verify * 1e6,
            unit="µs",
            reference_label="checking the link's two signatures",
            notes="crawler-user-agents' 1,500 patterns (its chunked matcher) and ours; "
            "then remembered (4,096 agents a process)",
            raw={"unseen_us": unseen * 1e6, "verify_us": verify * 1e6},
        ),
    ]


if __name__ == "__main__":
    from tests.benchmarks.run import main

    sys.exit(main(["--only", "stats"]))
