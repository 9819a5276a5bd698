"""The database side of a mailing at 100,000 and 1,000,000 readers.

For each size, on a throwaway database (SQLite, or PostgreSQL when
DATABASE_URL names one): readers seeded in SQL (common.seed_readers), then
in one driver process, with no broker and no mail server:

- the fan-out: Mailing.add_deliveries until done, as delivery.fan_out runs
  it (no tasks queued): seconds, and SQL queries per 1,000 readers;
- claim + record: for each fan-out chunk, what send_mailing_batch does
  with the database — load the mailing, claim the chunk's deliveries,
  record them all as sent, note progress, ask what is left, finish the
  mailing — with NO transport at all (nothing rendered, nothing sent):
  this isolates database time, it is not a sending rate;
- the admin's progress counts (MailingQuerySet.with_progress) of the
  finished mailing;
- the driver's peak RSS (VmHWM), at 1,000,000 against 100,000.

Standalone: ``SECRET_KEY=x .venv/bin/python tests/benchmarks/bench_million.py
[--sizes 100000,1000000] [--batch-size 1000]``; with DATABASE_URL set to a
PostgreSQL server, on PostgreSQL. ``run.py --only million`` runs it at
ctx.n and 10 × ctx.n.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.common import (
    DATABASE_URL,
    PYTHON,
    ROOT,
    Row,
    bench_database_url,
    manage,
    project_env,
)

BATCH_SIZE = 1000
# Claim + record is measured on at most this many chunks, evenly spread over
# the readers (all of them at 100,000): the cost per 1,000 is the figure.
SAMPLE_CHUNKS = 100


def measure(n, batch_size=BATCH_SIZE):
    """Seed n readers on a fresh database and measure one mailing's
    database work in a child process; a dict."""
    env = project_env(
        DATABASE_URL=bench_database_url(f"million{n}"), SUBSCRIPTIONS_BATCH_SIZE=batch_size
    )
    manage("migrate", "--noinput", env=env)
    driver = subprocess.run(
        [PYTHON, __file__, "--drive", str(n)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if driver.returncode:
        raise RuntimeError(f"million driver failed:\n{driver.stderr[-3000:]}")
    return json.loads(driver.stdout.strip().splitlines()[-1])


def peak_rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def drive(n):
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newsroom.settings")
    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from subscriptions import transports
    from subscriptions.conf import conf
    from subscriptions.models import Mailing, Subscriber
    from tests.benchmarks.common import seed_readers, settle_readers

    started = time.monotonic()
    seed_readers(n)
    settle_readers()
    seed_seconds = time.monotonic() - started
    rss_before = peak_rss_mb()

    queries = [0]

    def count(execute, sql, params, many, context):
        queries[0] += 1
        return execute(sql, params, many, context)

    mailing = Mailing.objects.create(
        post_key="bench:1",
        title="A post",
        url="https://example.com/a-post",
        subject="A post",
        text="text",
        html="<p>html</p>",
        created_at=timezone.now(),
    )
    # Fan-out, as delivery.fan_out runs it (its tasks are left out).
    chunks = []
    with connection.execute_wrapper(count):
        started = time.monotonic()
        mailing = Mailing.objects.sending().get(pk=mailing.pk)
        mailing.start()
        while chunk := mailing.add_deliveries():
            chunks.append(chunk)
        mailing.finish_if_done()
        fanout_seconds = time.monotonic() - started
    fanout_queries = queries[0]

    # Claim + record, chunk by chunk, as send_mailing_batch does it, with
    # no transport: every claimed row is recorded as sent.
    queries[0] = 0
    per_batch, per_batch_readers = [], []
    sample = chunks[:: max(1, len(chunks) // SAMPLE_CHUNKS)][:SAMPLE_CHUNKS]
    started = time.monotonic()
    with connection.execute_wrapper(count):
        for first, last, _ in sample:
            before = queries[0]
            current = Mailing.objects.sending().filter(pk=mailing.pk).first()
            rows = current.deliveries_between(first, last)
            claimed = rows.claim(conf.BATCH_SIZE)
            per_batch_readers.append(len(claimed))
            current.moved()
            with transaction.atomic():
                rows.model.objects.record(
                    transports.Outcome(sent=claimed), claimed[0].claim, claimed=len(claimed)
                )
            Subscriber.objects.confirmed_among({i.subscriber_id for i in claimed})
            if not rows.waiting()["count"]:
                current.finish_if_done()
            per_batch.append(queries[0] - before)
    claim_seconds = time.monotonic() - started

    started = time.monotonic()
    progress = Mailing.objects.with_progress().get(pk=mailing.pk)
    progress_seconds = time.monotonic() - started
    mailing.refresh_from_db()
    print(
        json.dumps(
            {
                "n": n,
                "vendor": connection.vendor,
                "batch_size": conf.BATCH_SIZE,
                "seed_seconds": seed_seconds,
                "fanout_seconds": fanout_seconds,
                "fanout_queries": fanout_queries,
                "chunks": len(chunks),
                "claim_record_seconds": claim_seconds,
                "claim_record_readers": sum(per_batch_readers),
                "batches": len(per_batch),
                "batch_queries": sorted(set(per_batch)),
                "claim_record_queries": sum(per_batch),
                "progress_seconds": progress_seconds,
                "sent": progress.sent_count,
                "pending": progress.pending_count,
                "status": mailing.status,
                "rss_after_seed_mb": rss_before,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def rows(ctx):
    vendor = "PostgreSQL" if DATABASE_URL.startswith(("postgres", "pgsql")) else "SQLite"
    small, large = ctx.n, ctx.n * 10
    results = {n: measure(n) for n in (small, large)}
    a, b = results[small], results[large]

    def claim_ms(r):  # per 1,000 readers
        return r["claim_record_seconds"] / r["claim_record_readers"] * 1e6

    out = []
    for n, r in results.items():
        out.append(
            Row(
                f"{vendor}, {n:,} readers: fan-out",
                r["fanout_seconds"],
                unit="s",
                notes=f"{r['fanout_queries'] * 1000 / n:.1f} SQL queries per 1,000 readers "
                f"({r['chunks']:,} chunks of {r['batch_size']:,}); readers seeded in "
                f"{r['seed_seconds']:.1f} s",
                raw=r,
            )
        )
        out.append(
            Row(
                f"{vendor}, {n:,} readers: claim + record per 1,000 readers "
                "(no transport: database work only)",
                claim_ms(r),
                unit="ms",
                notes=f"{r['claim_record_seconds']:.1f} s for {r['claim_record_readers']:,} "
                f"readers ({r['batches']} batches); SQL queries per batch "
                f"{r['batch_queries']}; admin progress counts {r['progress_seconds']:.2f} s",
            )
        )
    out.append(
        Row(
            f"{vendor}: fan-out, {large:,} / {small:,} readers",
            b["fanout_seconds"],
            a["fanout_seconds"],
            unit="s",
            reference_label=f"{small:,} readers",
            target="≈ 10 (linear)",
            met=b["fanout_seconds"] / a["fanout_seconds"] <= 12,
        )
    )
    out.append(
        Row(
            f"{vendor}: claim + record per 1,000, {large:,} / {small:,} readers",
            claim_ms(b),
            claim_ms(a),
            unit="ms",
            reference_label=f"{small:,} readers",
            target="≈ 1 (flat)",
            met=claim_ms(b) / claim_ms(a) <= 1.2,
        )
    )
    out.append(
        Row(
            f"{vendor}: peak RSS, {large:,} / {small:,} readers",
            b["peak_rss_mb"],
            a["peak_rss_mb"],
            unit="MB",
            reference_label=f"{small:,} readers",
            target="within 10 %, < 200 MB",
            met=b["peak_rss_mb"] <= a["peak_rss_mb"] * 1.1 and b["peak_rss_mb"] < 200,
            notes="the driver process (fan-out, then claim + record), not a Celery worker",
        )
    )
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        drive(int(sys.argv[2]))
    else:
        import argparse

        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--sizes", default="100000,1000000")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
        args = parser.parse_args()
        for n in (int(s) for s in args.sizes.split(",")):
            print(json.dumps(measure(n, args.batch_size)), flush=True)
