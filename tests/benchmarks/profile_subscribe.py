"""Where one subscribe POST's time goes, in one process, as gunicorn calls it.

Django's WSGI handler is called directly (no HTTP, no gunicorn) with the
web benchmark's settings (tests/benchmarks/web_settings.py: the site's own,
the rate limits raised), on a throwaway SQLite database with the seeds
loaded (or `<db>_bench_profile` when DATABASE_URL is PostgreSQL) and a
private Redis. It posts the footer form with a fresh address N times after
a warm-up, and prints per POST:

- the CPU time (time.process_time) and wall time of the whole POST, beside
  the trivial view's (tests/benchmarks/urls.py);
- the SQL statements of one POST (Django's commit is not a statement);
- `--phases`: CPU and wall time spent in each part (the parts are wrapped
  with timers; they overlap: the sign-up's transaction holds its commit and
  the confirmation's queueing);
- `--profile`: a cProfile listing (cumulative; SORT=tottime LINES=80 in
  the environment to change it), which makes everything about twice as
  slow.

It imports the code of the checkout it runs in (the working directory), so
it measures a worktree of main as well as a branch:

    cd CHECKOUT && SECRET_KEY=x .venv/bin/python PATH/TO/profile_subscribe.py [--n 1000] [--phases]
"""

import argparse
import cProfile
import io
import os
import pstats
import re
import sys
import time
import uuid
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_web import site_env  # noqa: E402
from tests.benchmarks.common import RedisServer, manage  # noqa: E402

PHASES = [
    # (module, attribute path, label)
    ("django.core.handlers.wsgi", "WSGIHandler.__call__", "whole request (WSGI handler)"),
    ("django.middleware.csrf", "CsrfViewMiddleware.process_view", "CSRF check"),
    ("subscriptions.forms", "SubscribeForm.is_valid", "form validation"),
    ("subscriptions.views", "_rate_limited", "rate limits (django-ratelimit)"),
    ("subscriptions.views", "_over_limit", "rate limits (one round trip)"),
    ("subscriptions.delivery", "subscribe", "sign-up: transaction, commit, queueing"),
    ("subscriptions.models", "SubscriberQuerySet.subscribe", "  the ORM statements"),
    ("django.db.backends.base.base", "BaseDatabaseWrapper.commit", "  COMMIT"),
    ("celery.app.task", "Task.apply_async", "  Celery publish"),
    ("subscriptions.delivery", "_push_confirmation", "  confirmation queued (Redis)"),
    ("django.db.backends.base.base", "BaseDatabaseWrapper.connect", "database connect"),
    ("django.db.backends.base.base", "BaseDatabaseWrapper.close", "database close"),
    ("subscriptions.views", "render", "page rendering"),
    ("subscriptions.views", "_check_inbox", "check-inbox page"),
]


def wrap_phases(timers):
    import importlib

    for module_name, path, label in PHASES:
        owner = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original = getattr(owner, name, None)
        if original is None:
            continue  # not in this checkout

        def timed(*args, _original=original, _label=label, **kwargs):
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                total = timers.setdefault(_label, [0.0, 0.0, 0])
                total[0] += time.process_time() - cpu
                total[1] += time.perf_counter() - wall
                total[2] += 1

        setattr(owner, name, timed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--phases", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    with RedisServer() as redis:
        env = site_env("profile", redis, "http://127.0.0.1:8000")
        manage("migrate", "--noinput", env=env)
        manage("load_seeds", "--no-email", env=env)
        os.environ.update(env)
        import django

        django.setup()
        run(args)


def run(args):
    from django.core.handlers.wsgi import WSGIHandler
    from django.db import connection

    app = WSGIHandler()

    def call(method, path, body=b"", cookie=""):
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "HTTP_HOST": "127.0.0.1:8000",
            "REMOTE_ADDR": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_USER_AGENT": "wrk",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        if body:
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
            environ["CONTENT_LENGTH"] = str(len(body))
        if cookie:
            environ["HTTP_COOKIE"] = cookie
        answer = {}

        def start_response(status, headers, exc_info=None):
            answer.update(status=status, headers=headers)

        chunks = app(environ, start_response)
        content = b"".join(chunks)
        chunks.close()  # request_finished: what gunicorn's worker does
        return answer["status"], answer["headers"], content

    _, headers, html = call("GET", "/subscribe/")
    cookie = next(v for k, v in headers if k == "Set-Cookie" and "csrftoken=" in v)
    cookie = cookie.split(";")[0].strip()
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', html)[1].decode()
    prefix = uuid.uuid4().hex[:8]

    def post(i):
        body = (
            f"csrfmiddlewaretoken={token}&form=footer&source=%2F&frequency=instant"
            f"&email=bench-{prefix}-{i}%40example.com"
        ).encode()
        status, _, content = call("POST", "/subscribe/", body, cookie)
        if not status.startswith("200") or b"Check your inbox" not in content:
            raise RuntimeError(f"unexpected answer {status}: {content[:300]!r}")

    for i in range(50):  # warm-up: templates, connections, imports
        post(i)
        call("GET", "/bench/trivial/")

    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        post("queries")
    print(f"SQL statements of one POST ({len(statements)}):")
    for sql in statements:
        print("   ", sql[:110])

    timers = {}
    if args.phases:
        wrap_phases(timers)
    for label, request in [
        ("trivial view", lambda i: call("GET", "/bench/trivial/")),
        ("subscribe POST", lambda i: post(10_000 + i)),
    ]:
        timers.clear()
        profile = cProfile.Profile() if args.profile and label != "trivial view" else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        for i in range(args.n):
            request(i)
        if profile:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        n = args.n
        print(f"{label:15} CPU {1000 * cpu / n:6.3f} ms  wall {1000 * wall / n:6.3f} ms a request")
        if args.phases and label != "trivial view":
            for name, (c, w, calls) in timers.items():
                print(
                    f"    {name:42} CPU {1000 * c / n:6.3f} ms  wall {1000 * w / n:6.3f} ms"
                    f"  ({calls / n:.0f} a POST)"
                )
        if profile:
            listing = pstats.Stats(profile).sort_stats(os.environ.get("SORT", "cumulative"))
            listing.print_stats(int(os.environ.get("LINES", "50")))


if __name__ == "__main__":
    main()
