"""Recovery: how long a mailing stalls after a worker is SIGKILLed, or after
Redis (broker and cache) restarts, mid-mailing.

For each fault: a throwaway database with N confirmed readers, a private
Redis, two `celery -A newsroom worker --pool=solo` processes and `celery -A
newsroom beat` (the site's own schedule: the sweeper every 3 s), all with the
default settings (CLAIM_TIMEOUT 5 minutes, HEARTBEAT 10 s), sending into the
run's SMTP sink. A driver process (this file, run with --drive) publishes one
post, and once a quarter of the readers have their message it makes the fault:

- kill: SIGKILL one of the two workers (its process group) mid-batch; the
  other goes on. Measured: fault → the killed batch's claim taken back
  (its rows sent or pending again), and fault → the mailing done.
- redis: SIGKILL redis-server and start a new one on the same port: every
  queued task and every cache key (journal, heartbeats) is gone. Measured:
  fault → the first delivery sent that no task alive at the fault had
  claimed (the lost tasks back in play), and fault → the mailing done.

Beside them: messages received, duplicates (a reader receiving the same
Message-ID twice), and the sweeper's SQL queries per run in the middle of
the mailing. Before heartbeats both stalled until CLAIM_TIMEOUT (about 6
minutes, measured black-box at 20,000 readers).

Standalone: ``.venv/bin/python tests/benchmarks/bench_recovery.py [--n 20000]``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.common import (
    BENCH_DIR,
    PYTHON,
    ROOT,
    RedisServer,
    Row,
    bench_database_url,
    celery,
    manage,
    project_env,
    seed_readers,
    settle_readers,
    start_worker,
    stop,
)

N_DEFAULT = 20_000


class Post:
    """A post as a host site hands it to subscriptions.announce()."""

    pk = 1
    title = "Breaking: the river is rising"
    published_at = None

    def get_absolute_url(self):
        return "/posts/1/"

    def email_summary(self):
        return "Evacuations ordered along the east bank."

    def topic_keys(self):
        return []

    def topic_links(self):
        return []


def scenario(n, fault, sink):
    """One mailing to n readers with `fault` ("kill" or "redis"); a dict."""
    with RedisServer() as redis:
        env = project_env(
            DATABASE_URL=bench_database_url(f"recovery_{fault}"),
            REDIS_URL=redis.url,
            EMAIL_URL=f"smtp://127.0.0.1:{sink.port}",
            LOG_LEVEL="WARNING",
            SUBSCRIPTIONS_SEND_DELAY=0,  # no undo window: publish starts the sending
        )
        manage("migrate", "--noinput", env=env)
        workers = [start_worker(f"w{i}@recovery", env) for i in range(2)]
        schedule = BENCH_DIR / f"celerybeat-recovery-{fault}"
        schedule.unlink(missing_ok=True)
        beat = celery("beat", "--schedule", str(schedule), "--loglevel=WARNING", env=env)
        restarted = None
        try:
            driver = subprocess.run(
                [PYTHON, __file__, "--drive", str(n), fault, str(sink.control_port),
                 str(workers[0].pid), str(redis.process.pid), str(redis.port)],
                cwd=ROOT, env=env, capture_output=True, text=True,
            )  # fmt: skip
            if driver.returncode:
                raise RuntimeError(f"recovery driver failed:\n{driver.stderr[-3000:]}")
            result = json.loads(driver.stdout.strip().splitlines()[-1])
            restarted = result.pop("redis_pid", None)
        finally:
            for process in [beat, *workers]:
                stop(process)
            if restarted:
                try:
                    os.killpg(restarted, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    return result


def drive(n, fault, control_port, victim_pid, redis_pid, redis_port):
    """In the driver process: the readers, the post, the fault, the clock."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newsroom.settings")
    django.setup()
    from celery import current_app
    from django.db import connection

    from subscriptions import delivery
    from subscriptions.models import Delivery, Mailing
    from tests.benchmarks.smtp_sink import SmtpSink
    from tests.support import start_redis, wait_until

    sink = SmtpSink.attach(control_port)
    seed_readers(n)  # reader1..n@example.com, confirmed, in two SQL statements
    settle_readers()
    deadline = time.monotonic() + 60
    while len(current_app.control.ping(timeout=0.5)) < 2:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start")
    sink.reset()
    published = time.time()
    mailing = delivery.announce(Post())[0]
    wait_until(lambda: sink.stats()["messages"] >= n // 4, timeout=600, interval=0.01)
    rows = Delivery.objects.filter(mailing=mailing)
    S = Delivery.Status
    result = {"fault": fault, "readers": n}
    if fault == "kill":
        claims = set(rows.filter(status=S.SENDING).values_list("claim", flat=True))
        os.killpg(victim_pid, signal.SIGKILL)
        faulted = time.time()
        result["messages_at_fault"] = sink.stats()["messages"]
        result["claims_at_fault"] = len(claims)
        # The survivor's batch ends in a moment; the victim's claim waits
        # for the sweeper.
        wait_until(
            lambda: not rows.filter(claim__in=claims, status=S.SENDING).exists(),
            timeout=900,
            interval=0.05,
        )
        result["back_in_play_s"] = time.time() - faulted
    else:
        taken = rows.filter(status__in=[S.SENT, S.SENDING]).count()
        os.killpg(redis_pid, signal.SIGKILL)
        faulted = time.time()
        result["messages_at_fault"] = sink.stats()["messages"]
        process = start_redis(redis_port, BENCH_DIR / "redis")
        result["redis_pid"] = process.pid
        # Only a task queued after the restart sends a reader no task alive
        # at the fault had claimed.
        wait_until(lambda: rows.filter(status=S.SENT).count() > taken, timeout=900, interval=0.05)
        result["back_in_play_s"] = time.time() - faulted

    def done():
        mailing.refresh_from_db()
        return mailing.status == Mailing.Status.DONE

    wait_until(done, timeout=900, interval=0.05)
    result["done_s"] = time.time() - faulted
    stats = sink.wait_for(n, timeout=60)
    result.update(
        messages=stats["messages"],
        duplicates=stats["duplicates"],
        publish_to_fault_s=faulted - published,
        sweep_queries=_sweep_queries(connection),
    )
    print(json.dumps(result))


def _sweep_queries(connection):
    """The SQL queries of one sweep, run here after the mailing (no claims
    left): its cost on every beat tick."""
    from subscriptions import delivery

    counted = []

    def count(execute, sql, params, many, context):
        counted.append(sql)
        return execute(sql, params, many, context)

    delivery.sweep()
    with connection.execute_wrapper(count):
        delivery.sweep()
    return len(counted)


def rows(ctx):
    n = max(ctx.n, N_DEFAULT) if not ctx.quick else ctx.n
    out = []
    for fault, label in (("kill", "a SIGKILLed worker"), ("redis", "a Redis restart")):
        r = ctx.once(("recovery", fault, n), lambda fault=fault: scenario(n, fault, ctx.sink))
        what = "its claim taken back" if fault == "kill" else "the lost tasks back in play"
        out.append(
            Row(
                f"Recovery after {label}, {n:,} readers: fault → {what}",
                r["back_in_play_s"],
                unit="s",
                target="< 30 s (was ~6 min)",
                met=r["back_in_play_s"] < 30,
                notes=f"fault → mailing done {r['done_s']:.1f} s; fault after "
                f"{r['messages_at_fault']:,} messages ({r['publish_to_fault_s']:.1f} s from "
                f"publish); {r['messages']:,} messages, {r['duplicates']} duplicates; "
                f"a sweep: {r['sweep_queries']} SQL queries",
                raw=r,
            )
        )
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        drive(int(sys.argv[2]), sys.argv[3], *(int(a) for a in sys.argv[4:8]))
    else:
        import argparse

        from tests.benchmarks.common import Context

        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--n", type=int, default=N_DEFAULT)
        args = parser.parse_args()
        ctx = Context(n=args.n)
        try:
            for row in rows(ctx):
                print(row.figure, f"{row.ours:.1f} s;", row.notes)
        finally:
            ctx.close()
