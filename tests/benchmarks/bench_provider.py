"""A provider's batch API: one post to N readers through Mailgun's API.

A throwaway database with N confirmed readers, a private Redis, 2 `celery
-A newsroom worker --pool=solo` processes sending through django-anymail's
real Mailgun backend to a lean local fake of Mailgun's API
(mailgun_fake.py, its own process), SUBSCRIPTIONS_BATCH_SIZE=5000 so each
batch is five full calls (as the README advises: a multiple of the
provider's per-call figure; BENCH_BATCH_SIZE=1000 in the environment runs it
with one call a batch, as it ran before 2026-12-02's third session). A driver publishes one article as an editor would
and waits until the fake has accepted N recipients.

Beside it, the raw API limit, measured in the same run: 2 processes each
posting their share of the same number of 1,000-recipient calls, with
per-recipient variables (recipient-variables, %recipient.x% links in the
body), to the same fake with `requests` — nothing else.

Reported: readers per API call, calls per second, publish → first call,
publish → last call, worker peak RSS, queries per 1,000 readers (one
fan-out and one batch on a second post, counted in the driver), ours ÷
raw (readers per second).

Standalone: ``.venv/bin/python tests/benchmarks/bench_provider.py --n 100000``.
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.bench_fanout import peak_rss_mb
from tests.benchmarks.common import (
    PYTHON,
    ROOT,
    RedisServer,
    Row,
    bench_database_url,
    manage,
    project_env,
    seed_readers,
    settle_readers,
    start,
    start_worker,
    stop,
)
from tests.support import free_port, wait_until

PER_CALL = 1000
# Readers a batch claims (SUBSCRIPTIONS_BATCH_SIZE): five calls' worth.
BATCH_SIZE = int(os.environ.get("BENCH_BATCH_SIZE", 5 * PER_CALL))
PROCESSES = 2
API_KEY = "key-bench"


class MailgunFake:
    def __enter__(self):
        self.port = free_port()
        self.process = start(
            [PYTHON, str(Path(__file__).with_name("mailgun_fake.py")), str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "ready"
        self.url = f"http://127.0.0.1:{self.port}"
        import requests

        self.http = requests.Session()
        return self

    def stats(self):
        return self.http.get(f"{self.url}/stats").json()

    def reset(self):
        self.http.post(f"{self.url}/reset")

    def wait_for(self, n, timeout):
        return wait_until(
            lambda: (s := self.stats())["unique"] >= n and s,
            timeout=timeout,
            message=f"{n:,} recipients at the fake",
            interval=0.05,
        )

    def __exit__(self, *exc):
        self.http.close()
        stop(self.process)


def raw_call_loop(url, calls, offset):
    """In a child process: post `calls` 1,000-recipient calls, each with
    per-recipient variables, as bare as it gets."""
    import requests

    session = requests.Session()
    session.auth = ("api", API_KEY)
    text = "Read it: http://example.com/p/1\nLeave: %recipient.UNSUBSCRIBE%\n" * 20
    html = "<p>Read it</p><a href='%recipient.UNSUBSCRIBE%'>Leave</a>" * 20
    for call in range(calls):
        first = (offset + call) * PER_CALL
        to = [f"reader{first + i}@example.com" for i in range(PER_CALL)]
        variables = {
            address: {
                "UNSUBSCRIBE": f"http://example.com/u/{first + i}/token",
                "h:Message-Id": f"<m.{first + i}@example.com>",
            }
            for i, address in enumerate(to)
        }
        response = session.post(
            f"{url}/v3/example.com/messages",
            data={
                "from": "news@example.com",
                "to": to,
                "subject": "A post",
                "text": text,
                "html": html,
                "h:Message-Id": "%recipient.h:Message-Id%",
                "recipient-variables": json.dumps(variables),
            },
        )
        response.raise_for_status()


def raw_api_limit(n, fake):
    """The same number of calls as n readers make, split over PROCESSES."""
    calls = math.ceil(n / PER_CALL)
    fake.reset()
    share = [calls // PROCESSES + (i < calls % PROCESSES) for i in range(PROCESSES)]
    offsets = [sum(share[:i]) for i in range(PROCESSES)]
    started = time.time()
    children = [
        start([PYTHON, __file__, "--raw", fake.url, str(c), str(o)], cwd=ROOT)
        for c, o in zip(share, offsets, strict=True)
    ]
    for child in children:
        if child.wait(timeout=600):
            raise RuntimeError("raw loop failed")
    stats = fake.stats()
    seconds = stats["last"] - started
    return {
        **stats,
        "seconds": seconds,
        "readers_per_second": stats["recipients"] / seconds,
        "calls_per_second": stats["calls"] / seconds,
    }


def through_anymail(n, fake):
    with RedisServer() as redis:
        env = project_env(
            DATABASE_URL=bench_database_url("provider"),
            REDIS_URL=redis.url,
            EMAIL_BACKEND="anymail.backends.mailgun.EmailBackend",
            ANYMAIL_MAILGUN_API_KEY=API_KEY,
            ANYMAIL_MAILGUN_API_URL=f"{fake.url}/v3",
            DEFAULT_FROM_EMAIL="news@example.com",
            SUBSCRIPTIONS_BATCH_SIZE=BATCH_SIZE,
            SUBSCRIPTIONS_SEND_DELAY=0,  # no undo window: publish starts the sending
        )
        manage("migrate", "--noinput", env=env)
        workers = [start_worker(f"w{i}@bench", env) for i in range(PROCESSES)]
        try:
            pids = ",".join(str(w.pid) for w in workers)
            driver = subprocess.run(
                [PYTHON, __file__, "--drive", str(n), fake.url, pids],
                cwd=ROOT, env=env, capture_output=True, text=True,
            )  # fmt: skip
            if driver.returncode:
                raise RuntimeError(f"provider driver failed:\n{driver.stderr[-3000:]}")
            result = json.loads(driver.stdout.strip().splitlines()[-1])
            result["peak_rss_mb"] = [peak_rss_mb(w.pid) for w in workers]
        finally:
            for worker in workers:
                stop(worker)
    return result


def cpu_seconds(pids):
    """User + system CPU time the processes `pids` have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def drive(n, url, pids=()):
    """In the driver process: readers, publish, wait for the fake; then the
    queries of one fan-out and one batch on a second post. `pids`: the
    workers', whose CPU time from publish to the last call is reported."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newsroom.settings")
    django.setup()
    from celery import current_app
    from django.db import connection, transaction

    from newsroom.models import Article
    from subscriptions import delivery
    from subscriptions.models import MAX_ID, Mailing

    fake = MailgunFake()
    fake.url = url
    import requests

    fake.http = requests.Session()
    seed_readers(n)  # reader1..n@example.com, confirmed, in two SQL statements
    settle_readers()
    body = (ROOT / "seeds" / "000_629ffa57cfc0d820.txt").read_text().split("---\n", 2)[2]
    html = "".join(f"<p>{p}</p>" for p in body.splitlines()[:-2] if p.strip())

    def post(title):
        return Article.objects.create(title=title, body=html, status=Article.Status.DRAFT)

    first_post = post("Report says Sessions and Rosenstein pushed child separations")
    deadline = time.monotonic() + 60
    while len(current_app.control.ping(timeout=0.5)) < PROCESSES:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start")
    fake.reset()
    cpu_before = cpu_seconds(pids)
    started = time.time()
    with transaction.atomic():
        first_post.publish()
    stats = fake.wait_for(n, timeout=900)
    worker_cpu = cpu_seconds(pids) - cpu_before
    mailing = Mailing.objects.get()
    wait_until(
        lambda: Mailing.objects.get(pk=mailing.pk).status == Mailing.Status.DONE,
        timeout=120,
        message="the mailing to be done",
        interval=0.1,
    )

    counts = []

    def count(execute, sql, params, many, context):
        counts[-1] += 1
        return execute(sql, params, many, context)

    transaction.on_commit = lambda fn, using=None, robust=False: None
    second, _ = delivery.announce(post("A second post"))
    with connection.execute_wrapper(count):
        counts.append(0)
        delivery.fan_out(second.pk)
        counts.append(0)
        sent = delivery.send_mailing_batch(second.pk, 0, MAX_ID)
    seconds = stats["last"] - started
    print(
        json.dumps(
            {
                **stats,
                "seconds": seconds,
                "first_latency": stats["first"] - started,
                "readers_per_second": stats["recipients"] / seconds,
                "calls_per_second": stats["calls"] / seconds,
                "readers_per_call": stats["recipients"] / stats["calls"],
                "worker_cpu_per_1000": worker_cpu / (stats["recipients"] / 1000),
                "fanout_queries": counts[0],
                "batch_queries": counts[1],
                "batch_messages": sent,
                "mailing": Mailing.objects.get(pk=mailing.pk).status,
            }
        )
    )


def rows(ctx):
    n = ctx.n
    with MailgunFake() as fake:
        raw = raw_api_limit(n, fake)
        ours = through_anymail(n, fake)
    ratio = ours["readers_per_second"] / raw["readers_per_second"]
    fanout_per_1000 = ours["fanout_queries"] / (n / 1000)
    return [
        Row(
            f"Mailgun batch API, {PROCESSES} workers / raw API limit ({PROCESSES} processes)",
            ours["readers_per_second"],
            raw["readers_per_second"],
            unit="readers/s",
            reference_label=f"raw, {raw['calls']} calls",
            target="≥ 0.5",
            met=ratio >= 0.5,
            notes=f"{ours['unique']:,} readers in {ours['calls']} calls "
            f"(BATCH_SIZE {BATCH_SIZE:,}), "
            f"workers' CPU {ours['worker_cpu_per_1000'] * 1000:.0f} ms per 1,000 readers, "
            f"{ours['calls_per_second']:.1f} calls/s (raw {raw['calls_per_second']:.1f}), "
            f"{ours['duplicates']} duplicates, mailing {ours['mailing']}",
            raw={"ours": ours, "raw": raw},
        ),
        Row(
            "Mailgun readers per API call (average)",
            ours["readers_per_call"],
            unit="readers",
            target="≥ 990",
            met=ours["readers_per_call"] >= 990,
            notes=f"largest call {ours['max_recipients']:,}",
        ),
        Row(
            f"Mailgun publish → first call / → last call ({n:,} readers)",
            ours["first_latency"] * 1000,
            ours["seconds"] * 1000,
            unit="ms",
            reference_label="last call",
        ),
        Row(
            "Mailgun worker peak RSS (2 workers)",
            max(ours["peak_rss_mb"]),
            unit="MB",
            target="< 200 MB",
            met=max(ours["peak_rss_mb"]) < 200,
            notes=", ".join(f"{m:.0f} MB" for m in ours["peak_rss_mb"]),
        ),
        Row(
            "Mailgun SQL queries per 1,000 readers (fan-out + one batch)",
            fanout_per_1000 + ours["batch_queries"] * 1000 / max(ours["batch_messages"], 1),
            unit="queries",
            notes=f"fan-out over {n:,}: {ours['fanout_queries']} queries; one batch of "
            f"{ours['batch_messages']}: {ours['batch_queries']} queries",
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        drive(int(sys.argv[2]), sys.argv[3], [int(p) for p in sys.argv[4].split(",") if p])
    elif len(sys.argv) > 1 and sys.argv[1] == "--raw":
        raw_call_loop(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        import argparse

        from tests.benchmarks.common import Context

        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--n", type=int, default=100_000)
        args = parser.parse_args()
        ctx = Context(n=args.n, quick=True)
        for row in rows(ctx):
            print(row.figure, row.ours, row.reference, row.ratio, row.notes)
