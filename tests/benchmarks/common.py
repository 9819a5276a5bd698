"""What the benchmarks share: the row they return, the run's context, a
throwaway database under var/bench/, a private Redis, and child processes
started in their own process group (so stopping one stops its children).

Nothing here imports Django: benchmark modules decide when to set it up.
"""

import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support import free_port, start_redis, stop_group

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "var" / "bench"
PYTHON = sys.executable
# The developer's DATABASE_URL, read before setup_django() replaces it: it
# only decides whether benchmark databases are SQLite files or PostgreSQL.
DATABASE_URL = os.environ.get("DATABASE_URL", "")


@dataclass
class Row:
    """One line of the table. `ours` and `reference` are the raw numbers the
    ratio is made of (same unit, same run); `target` says what the issue asks
    of the ratio (or of `ours`), and `met` whether this run meets it (None: no
    target)."""

    figure: str
    ours: float
    reference: float | None = None
    unit: str = ""
    reference_label: str = ""
    target: str = ""
    met: bool | None = None
    notes: str = ""
    raw: dict = field(default_factory=dict)

    @property
    def ratio(self):
        if not self.reference:
            return None
        return self.ours / self.reference

    def as_dict(self):
        ours = None if self.ours != self.ours else self.ours  # NaN: not measured
        return {**asdict(self), "ours": ours, "ratio": self.ratio}


class Context:
    """What one run of the harness shares between benchmarks: its options,
    the SMTP sink (started on first use, stopped at the end) and a memo so a
    figure measured once (the raw SMTP limit, the peer) serves every row that
    divides by it."""

    def __init__(self, n=10_000, quick=False):
        self.n = n
        self.quick = quick
        self._sink = None
        self.memo = {}

    @property
    def sink(self):
        if self._sink is None:
            from tests.benchmarks.smtp_sink import SmtpSink

            self._sink = SmtpSink().start()
        return self._sink

    def once(self, key, compute):
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def close(self):
        if self._sink is not None:
            self._sink.stop()
            self._sink = None


def start(args, **kwargs):
    """Popen in a new process group (stop it with `stop`)."""
    return subprocess.Popen(args, start_new_session=True, **kwargs)


def celery(*args, env):
    """`celery -A newsroom ARGS` with `env`, quiet, in its own process group."""
    return start(
        [PYTHON, "-m", "celery", "-A", "newsroom", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_worker(name, env):
    """A benchmark's Celery worker: solo pool, no mingle or gossip, quiet."""
    return celery(
        "worker", "--pool=solo", "--without-mingle", "--without-gossip",
        "--loglevel=WARNING", "-n", name, env=env,
    )  # fmt: skip


def stop(process, timeout=10):
    """SIGTERM the process group, SIGKILL it if it lingers."""
    stop_group(process, timeout=timeout)


class RedisServer:
    """A private redis-server on 127.0.0.1 for one benchmark; `url`."""

    def __enter__(self):
        self.port = free_port()
        workdir = BENCH_DIR / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = start_redis(self.port, workdir)
        self.url = f"redis://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        stop(self.process)


def bench_database_url(name):
    """A DATABASE_URL for a fresh, empty database for benchmark `name`.

    SQLite (the default): var/bench/<name>.sqlite3, deleted first. When
    DATABASE_URL points at PostgreSQL: a database `<dbname>_bench_<name>` on
    the same server, dropped and created again (the role needs CREATEDB, as
    the test suite's does). Never the developer's own database.
    """
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    url = DATABASE_URL
    if url.startswith(("postgres://", "postgresql://", "pgsql://")):
        import psycopg

        parts = urlsplit(url)
        dbname = f"{parts.path.lstrip('/') or 'postgres'}_bench_{name}"
        admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return urlunsplit(parts._replace(path=f"/{dbname}"))
    path = BENCH_DIR / f"{name}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


_django = {"ready": False, "migrated": False}


def setup_django(migrate=True):
    """Django in this process, on the run's own throwaway database ("run":
    var/bench/run.sqlite3, or `<db>_bench_run` on PostgreSQL), migrated on the
    first call that asks. Call it before importing models. Never touches the
    developer's database."""
    if not _django["ready"]:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        os.environ["DATABASE_URL"] = bench_database_url("run")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newsroom.settings")
        os.environ.setdefault("SECRET_KEY", "insecure-benchmark-only-key")
        import django

        django.setup()
        _django["ready"] = True
    if migrate and not _django["migrated"]:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        _django["migrated"] = True


def project_env(**overrides):
    """The environment for a child process running the project."""
    env = dict(os.environ)
    env.setdefault("SECRET_KEY", "insecure-benchmark-only-key")
    env.setdefault("DEBUG", "false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def manage(*args, env, quiet=True):
    """Run `manage.py` with the given environment; raise on failure."""
    subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL if quiet else None,
    )


def seed_readers(n, *, topics=(), frequency="instant", confirmed_at=None, prefix="reader"):
    """Insert `n` confirmed readers in two SQL statements (a million in
    seconds, on SQLite and PostgreSQL): reader{i}@example.com, i = 1..n,
    with `frequency`, confirmed at `confirmed_at` (default now). Without
    `topics` they follow everything; with them, each follows one of
    `topics`, in turn by id. Returns the (first, last) ids made.

    For benchmarks (and the batch path's): it writes rows straight into the
    tables, skipping the sign-up and its consent record. Call it after
    Django is set up, on the database the workers use; `prefix` keeps
    addresses unique when called twice.
    """
    from django.db import connection, transaction
    from django.utils import timezone

    from subscriptions.models import Follow, Subscriber

    ops = connection.ops
    confirmed_at = ops.adapt_datetimefield_value(confirmed_at or timezone.now())
    # Table names from the models, quoted; every value is a parameter.
    readers, follows = (ops.quote_name(m._meta.db_table) for m in (Subscriber, Follow))
    topics = list(topics)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {readers}")  # noqa: S608
        (before,) = cursor.fetchone()
        # A recursive CTE counts on both databases (PostgreSQL also has
        # generate_series; this is fast enough: ~1 s per million there).
        cursor.execute(
            f"""
            WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %s)
            INSERT INTO {readers} (
                email, name, status, frequency, follows_everything, key,
                consent_user_agent, consent_page, consent_wording, created_at, confirmed_at,
                stats_opt_out
            )
            SELECT %s || i || '@example.com', '', 'confirmed', %s, %s, %s || i,
                   '', '', '', %s, %s, %s
            FROM seq
            """,  # noqa: S608
            [n, prefix, frequency, not topics, f"k{prefix}", confirmed_at, confirmed_at, False],
        )
        if topics:
            cases = " ".join("WHEN %s THEN %s" for _ in topics)
            params = [p for index, topic in enumerate(topics) for p in (index, topic)]
            cursor.execute(
                f"""
                INSERT INTO {follows} (subscriber_id, topic)
                SELECT id, CASE ((id - %s) %% %s) {cases} END FROM {readers} WHERE id > %s
                """,  # noqa: S608
                [before, len(topics), *params, before],
            )
        cursor.execute(f"SELECT MIN(id), MAX(id) FROM {readers} WHERE id > %s", [before])  # noqa: S608
        return tuple(cursor.fetchone())


def settle_readers():
    """On PostgreSQL, VACUUM ANALYZE the database (outside any transaction),
    as autovacuum leaves a live site's readers, signed up over months: the
    planner has statistics, and the rows' hint bits and visibility map are
    set. Without it the first fan-out after seed_readers() pays, once, for
    setting them on a million freshly written rows. SQLite keeps neither:
    nothing to do there."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
