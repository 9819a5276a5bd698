"""Fan-out: one post published the normal way reaches N readers.

For 1 and 2 worker processes: a throwaway database with N confirmed readers,
a private Redis, that many `celery -A newsroom worker --pool=solo`
processes, the run's SMTP sink. A driver process (this file, run with
--drive) publishes one article as an editor would (Article.publish() in a
transaction: after commit, subscriptions.announce() makes the mailing and
queues the fan-out) and waits until the sink has accepted N messages.

Reported beside the raw SMTP limit with the same number of processes and
django-newsletter, both measured in the same run: messages per second from
publish to the last message accepted, publish → first message, duplicates,
each worker's peak RSS (VmHWM), and the SQL queries of one fan-out and of one
batch, counted in the driver on a second post.

Standalone: ``.venv/bin/python tests/benchmarks/bench_fanout.py [--n 10000]``;
``… bench_fanout.py --memory`` measures one worker at 10,000 and 100,000 readers.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.common import (
    PYTHON,
    ROOT,
    RedisServer,
    Row,
    bench_database_url,
    manage,
    project_env,
    start_worker,
    stop,
)

BATCH_SIZE = 500


def fan_out(n, processes, sink, **settings):
    """Publish one post to n readers with `processes` workers (their
    environment also holds `settings`); a dict."""
    with RedisServer() as redis:
        env = project_env(
            DATABASE_URL=bench_database_url(f"fanout{processes}"),
            REDIS_URL=redis.url,
            EMAIL_URL=f"smtp://127.0.0.1:{sink.port}",
            SUBSCRIPTIONS_BATCH_SIZE=BATCH_SIZE,
            # Sending, not the undo window, is measured: mail at once.
            SUBSCRIPTIONS_SEND_DELAY=0,
            **settings,
        )
        manage("migrate", "--noinput", env=env)
        workers = [start_worker(f"w{i}@bench", env) for i in range(processes)]
        try:
            driver = subprocess.run(
                [PYTHON, __file__, "--drive", str(n), str(processes), str(sink.control_port)],
                cwd=ROOT, env=env, capture_output=True, text=True,
            )  # fmt: skip
            if driver.returncode:
                raise RuntimeError(f"fan-out driver failed:\n{driver.stderr[-3000:]}")
            result = json.loads(driver.stdout.strip().splitlines()[-1])
            result["peak_rss_mb"] = [peak_rss_mb(w.pid) for w in workers]
        finally:
            for worker in workers:
                stop(worker)
    return result


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def drive(n, processes, control_port):
    """In the driver process: make the readers, wait for the workers, publish
    and time it; then count the queries of one fan-out and one batch."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newsroom.settings")
    django.setup()
    from celery import current_app
    from django.db import connection, transaction

    from newsroom.models import Article, ArticleEntity, Entity
    from subscriptions import delivery
    from subscriptions.models import MAX_ID, Mailing, Subscriber
    from tests.benchmarks.smtp_sink import SmtpSink

    sink = SmtpSink.attach(control_port)
    now = django.utils.timezone.now()
    Subscriber.objects.bulk_create(
        (
            Subscriber(
                email=f"reader{i}@example.com", status="confirmed", confirmed_at=now, key=f"k{i}"
            )
            for i in range(n)
        ),
        batch_size=5000,
    )
    body = (ROOT / "seeds" / "000_629ffa57cfc0d820.txt").read_text().split("---\n", 2)[2]
    html = "".join(f"<p>{p}</p>" for p in body.splitlines()[:-2] if p.strip())
    entity = Entity.objects.create(name="Jeff Sessions")

    def post(title):
        article = Article.objects.create(title=title, body=html, status=Article.Status.DRAFT)
        ArticleEntity.objects.create(article=article, entity=entity)
        return article

    first_post = post("Report says Sessions and Rosenstein pushed child separations")
    deadline = time.monotonic() + 60
    while len(current_app.control.ping(timeout=0.5)) < processes:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start")
    sink.reset()
    started = time.time()
    with transaction.atomic():
        first_post.publish()
    stats = sink.wait_for(n, timeout=600)
    mailing = Mailing.objects.get()

    # Queries of one fan-out and of one batch, on a second post.
    counts = []

    def count(execute, sql, params, many, context):
        counts[-1] += 1
        return execute(sql, params, many, context)

    # Queue no tasks: this post is counted here, not sent by the workers.
    transaction.on_commit = lambda fn, using=None, robust=False: None
    second, _ = delivery.announce(post("A second post"))
    with connection.execute_wrapper(count):
        counts.append(0)
        delivery.fan_out(second.pk)
        counts.append(0)
        sent = delivery.send_mailing_batch(second.pk, 0, MAX_ID)
    print(
        json.dumps(
            {
                "messages": stats["messages"],
                "chunked": stats.get("chunked", 0),  # of them, sent by BDAT
                "duplicates": stats["duplicates"],
                "seconds": stats["last"] - started,
                "per_second": stats["messages"] / (stats["last"] - started),
                "first_latency": stats["first"] - started,
                "message_bytes": stats["bytes"] / max(stats["messages"], 1),
                "mailing_done": mailing.status,
                "fanout_queries": counts[0],
                "batch_queries": counts[1],
                "batch_messages": sent,
            }
        )
    )


def rows(ctx):
    from tests.benchmarks.bench_peer import peer_django_newsletter
    from tests.benchmarks.bench_smtp import median_raw_smtp_limit

    repeats = 1 if ctx.quick else 3
    raw = {
        p: ctx.once(("raw_smtp", p), lambda p=p: median_raw_smtp_limit(ctx.n, p, ctx.sink, repeats))
        for p in (1, 2)
    }
    ours = {p: fan_out(ctx.n, p, ctx.sink) for p in (1, 2)}
    peer = ctx.once("peer", lambda: peer_django_newsletter(ctx.n, ctx.sink))
    out = []
    for p in (1, 2):
        r = ours[p]
        out.append(
            Row(
                f"Fan-out, {p} worker process{'es' if p > 1 else ''} / raw SMTP limit ({p})",
                r["per_second"],
                raw[p]["per_second"],
                unit="msg/s",
                reference_label=f"raw limit, {p} process{'es' if p > 1 else ''}",
                target="≥ 0.7",
                met=r["per_second"] / raw[p]["per_second"] >= 0.7,
                notes=f"{r['messages']:,} messages in {r['seconds']:.2f} s from publish, "
                f"{r['duplicates']} duplicates, {r['message_bytes'] / 1000:.1f} KB each, "
                f"mailing {r['mailing_done']}",
                raw=r,
            )
        )
    out.append(
        Row(
            "Fan-out, 1 worker process / django-newsletter",
            ours[1]["per_second"],
            peer["per_second"],
            unit="msg/s",
            reference_label="django-newsletter",
            target="≈ 14 (0.7 × raw)",
            notes=f"django-newsletter: {peer['queries_per_message']:.2f} queries and one SMTP "
            f"connection per message",
        )
    )
    out.append(
        Row(
            "Publish → first message accepted (2 workers)",
            ours[2]["first_latency"] * 1000,
            unit="ms",
            target="< 1000 ms",
            met=ours[2]["first_latency"] < 1,
            notes=f"1 worker: {ours[1]['first_latency'] * 1000:.0f} ms",
        )
    )
    rss = ours[1]["peak_rss_mb"][0]
    out.append(
        Row(
            f"Worker peak RSS at {ctx.n:,} readers (1 worker)",
            rss,
            peer["peak_rss_mb"],
            unit="MB",
            reference_label="django-newsletter",
            target="< 150 MB, flat in N",
            met=rss < 150,
            notes="2 workers: " + ", ".join(f"{m:.0f} MB" for m in ours[2]["peak_rss_mb"]),
        )
    )
    r = ours[1]
    out.append(
        Row(
            f"SQL queries per batch of {r['batch_messages']} messages",
            r["batch_queries"],
            unit="queries",
            target="constant, no per-reader query",
            met=r["batch_queries"] < 20,
            notes=f"one fan-out over {ctx.n:,} readers: {r['fanout_queries']} queries "
            f"({r['fanout_queries'] / (ctx.n / BATCH_SIZE):.1f} per {BATCH_SIZE} readers)",
        )
    )
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        drive(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--memory":
        # Worker memory (and latency, throughput) at 10,000 and 100,000
        # readers, one worker, in one run: must not grow with N.
        from tests.benchmarks.smtp_sink import SmtpSink

        with SmtpSink() as sink:
            for n in (10_000, 100_000):
                r = fan_out(n, 1, sink)
                print(
                    f"{n:>7,} readers: peak RSS {r['peak_rss_mb'][0]:.1f} MB, "
                    f"{r['per_second']:,.0f} msg/s, first message after "
                    f"{r['first_latency'] * 1000:.0f} ms, {r['duplicates']} duplicates, "
                    f"{r['batch_queries']} queries per batch"
                )
    else:
        import argparse

        from tests.benchmarks.common import Context

        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--n", type=int, default=10_000)
        args = parser.parse_args()
        ctx = Context(n=args.n, quick=True)
        try:
            for row in rows(ctx):
                print(row.figure, row.ours, row.reference, row.ratio, row.notes)
        finally:
            ctx.close()
