"""The admin's mailing list (the Mailing changelist, with each mailing's
progress counts) when every mailing on it is done and large.

On a throwaway database (SQLite, or PostgreSQL when DATABASE_URL names
one), in a child process: 20 done mailings of `n` deliveries each (written
in SQL: 96% sent, 2% failed, 2% skipped; each finished by
Mailing.finish_if_done, as the last batch finishes it), then the
changelist page fetched by a logged-in superuser through Django's test
client, RUNS times. The figure is the CPU time of the driver process per
page (median), which on SQLite includes the database's work; on
PostgreSQL the server's is not in it, so the wall time is printed too.
The reference is the same page over 20 done mailings of 100 deliveries,
measured in the same child. A second row gives the CPU time of
finish_if_done for each large mailing (it stores the counts: one count
over the mailing's rows, once).

Standalone: ``SECRET_KEY=x .venv/bin/python tests/benchmarks/bench_progress.py
[--n 100000]``; ``run.py --only progress`` runs it at ctx.n deliveries per
mailing.
"""

import json
import statistics
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

MAILINGS = 20
SMALL = 100
RUNS = 7


def measure(n):
    env = project_env(DATABASE_URL=bench_database_url("progress"))
    manage("migrate", "--noinput", env=env)
    driver = subprocess.run(
        [PYTHON, __file__, "--drive", str(n)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if driver.returncode:
        raise RuntimeError(f"progress driver failed:\n{driver.stderr[-3000:]}")
    return json.loads(driver.stdout.strip().splitlines()[-1])


def drive(n):
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newsroom.settings")
    django.setup()
    from django.contrib.auth.models import User
    from django.db import connection
    from django.db.models import Case, F, Value, When
    from django.test import Client
    from django.test.utils import setup_test_environment

    from subscriptions.models import Delivery, Mailing, Subscriber
    from tests.benchmarks.common import seed_readers

    setup_test_environment()
    started = time.monotonic()
    seed_readers(max(n, SMALL))
    readers = Subscriber.objects.order_by("pk")
    first = readers.values_list("pk", flat=True).first()

    finishing = []

    def done_mailings(prefix, size):
        """MAILINGS mailings of `size` deliveries each, finished; the CPU
        time of each finish_if_done in `finishing`."""
        status = Case(
            When(pk__lt=first + size * 0.02, then=Value(Delivery.Status.FAILED)),
            When(pk__lt=first + size * 0.04, then=Value(Delivery.Status.SKIPPED)),
            default=Value(Delivery.Status.SENT),
        )
        for i in range(MAILINGS):
            mailing = Mailing.objects.create(
                post_key=f"bench:{prefix}:{i}",
                title=f"Post {prefix} {i}",
                url="https://example.com/a-post",
                subject="A post",
                text="text",
                html="<p>html</p>",
                status=Mailing.Status.SENDING,
                fanout_done=True,
            )
            Delivery.objects.insert_from(
                readers.filter(pk__lt=first + size),
                mailing_id=Value(mailing.pk),
                subscriber_id=F("pk"),
                status=status,
            )
            started = time.process_time()
            mailing.finish_if_done()
            finishing.append(time.process_time() - started)

    def page_times():
        client = Client()
        client.force_login(admin)
        assert client.get("/admin/subscriptions/mailing/").status_code == 200  # warm
        cpu, wall = [], []
        for _ in range(RUNS):
            c, w = time.process_time(), time.perf_counter()
            response = client.get("/admin/subscriptions/mailing/")
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
            assert response.status_code == 200
        return cpu, wall

    admin = User.objects.create_superuser("bench", "bench@example.com", "bench-pw-12345")
    done_mailings("small", SMALL)
    small_cpu, small_wall = page_times()
    Mailing.objects.all().delete()
    finishing.clear()
    done_mailings("large", n)
    seed_seconds = time.monotonic() - started
    large_cpu, large_wall = page_times()
    print(
        json.dumps(
            {
                "n": n,
                "vendor": connection.vendor,
                "mailings": MAILINGS,
                "deliveries": Delivery.objects.count(),
                "seed_seconds": seed_seconds,
                "small_cpu": small_cpu,
                "small_wall": small_wall,
                "large_cpu": large_cpu,
                "large_wall": large_wall,
                "finish_cpu": finishing,
            }
        )
    )


def rows(ctx):
    vendor = "PostgreSQL" if DATABASE_URL.startswith(("postgres", "pgsql")) else "SQLite"
    r = measure(ctx.n)
    large, small = (statistics.median(r[k]) * 1000 for k in ("large_cpu", "small_cpu"))
    return [
        Row(
            f"{vendor}: mailing list page, {MAILINGS} done mailings × {ctx.n:,} deliveries "
            f"/ × {SMALL}",
            large,
            small,
            unit="ms CPU",
            reference_label=f"{SMALL} deliveries each",
            target="≈ 1 (flat)",
            met=large / small <= 1.5,
            notes=f"median of {RUNS}; every run, CPU ms: "
            f"{[round(x * 1000, 1) for x in r['large_cpu']]} against "
            f"{[round(x * 1000, 1) for x in r['small_cpu']]}; wall ms (median) "
            f"{statistics.median(r['large_wall']) * 1000:.1f} against "
            f"{statistics.median(r['small_wall']) * 1000:.1f}; "
            f"{r['deliveries']:,} deliveries written in {r['seed_seconds']:.0f} s",
            raw=r,
        ),
        Row(
            f"{vendor}: finishing a mailing of {ctx.n:,} deliveries (once per mailing)",
            statistics.median(r["finish_cpu"]) * 1000,
            unit="ms CPU",
            notes="Mailing.finish_if_done, its counts stored in the same transaction; "
            f"median of {MAILINGS}, fastest {min(r['finish_cpu']) * 1000:.1f} ms",
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--drive":
        drive(int(sys.argv[2]))
    else:
        import argparse

        from tests.benchmarks.common import Context

        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--n", type=int, default=100_000)
        args = parser.parse_args()
        for row in rows(Context(n=args.n)):
            print(row.as_dict())
