"""Web throughput: pages and the subscribe POST against a trivial Django view.

gunicorn serves the site as `make run` does (2 sync workers, DEBUG off) on a
throwaway database under var/bench/ (migrated, seeds loaded) and a private
Redis (the cache, so the rate limits, and the Celery broker). The settings are
the site's own plus a trivial view (`tests/benchmarks/urls.py`) and raised
subscribe rate limits (`tests/benchmarks/web_settings.py`).

wrk (Debian's `wrk`: `apt-get install -y wrk`) drives 50 concurrent
connections at 127.0.0.1 for a bounded time per URL, after a short warm-up:
the trivial view, an article, the home page, the RSS feed, and POST
/subscribe/ with a fresh address each time and a CSRF cookie and token taken
from the subscribe page first. Each figure is requests/s divided by the
trivial view's, with p50/p99 latency beside it.

Standalone: ``.venv/bin/python tests/benchmarks/bench_web.py [--seconds 10]``.
"""

import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.common import (
    BENCH_DIR,
    ROOT,
    RedisServer,
    Row,
    bench_database_url,
    manage,
    project_env,
    start,
    stop,
)
from tests.support import free_port, wait_until

CONNECTIONS = 50
GUNICORN = Path(sys.executable).parent / "gunicorn"

SUBSCRIBE_LUA = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Cookie"] = "csrftoken=%(cookie)s"
function request()
  n = n + 1
  local body = "csrfmiddlewaretoken=%(token)s&form=footer&source=%%2F&frequency=instant" ..
    "&email=bench-%(prefix)s-" .. tid .. "-" .. n .. "%%40example.com"
  return wrk.format(nil, "/subscribe/", nil, body)
end
"""


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers, response.read().decode()


def to_ms(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000}[unit]


def wrk(url, seconds, script=None, warmup=False):
    """Run wrk; {"rps", "p50_ms", "p99_ms", "requests", "errors"} (nothing
    for a warm-up, whose first requests may not even finish in time)."""
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s", "--latency"]
    if script:
        args += ["-s", str(script)]
    try:
        out = subprocess.run(
            [*args, url], capture_output=True, text=True, timeout=seconds + 30, check=True
        ).stdout
    finally:
        if script:
            script.unlink()
    if warmup:
        return None
    latency = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.MULTILINE))
    if "50" not in latency or "99" not in latency:
        raise RuntimeError(f"unexpected wrk output for {url}:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "p50_ms": to_ms(latency["50"]),
        "p99_ms": to_ms(latency["99"]),
        "requests": int(re.search(r"(\d+) requests in", out)[1]),
        "errors": (int(non_2xx[1]) if non_2xx else 0),
        "socket_errors": socket_errors[1] if socket_errors else "",
    }


def subscribe_script(base):
    """A wrk script posting a fresh address each time, with a CSRF cookie
    and token read from the subscribe page."""
    status, headers, html = get(base + "/subscribe/")
    cookie = re.search(r"csrftoken=([^;]+)", headers.get("Set-Cookie", ""))[1]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)[1]
    values = {"cookie": cookie, "token": token, "prefix": uuid.uuid4().hex[:8]}
    path = BENCH_DIR / f"subscribe-{values['prefix']}.lua"
    path.write_text(SUBSCRIBE_LUA % values)
    return path


def measure(base, seconds, warmup):
    """Serve the site and load each URL in turn; {name: wrk result}."""
    status, _, home = get(base + "/")
    article = re.search(r'href="(/articles/[^"]+/)"', home)[1]
    targets = {
        "trivial": "/bench/trivial/",
        "article": article,
        "home": "/",
        "feed": "/feed/",
        "subscribe": "/subscribe/",
    }
    results = {}
    for name, path in targets.items():
        fresh = subscribe_script if name == "subscribe" else lambda base: None
        wrk(base + path, warmup, fresh(base), warmup=True)
        results[name] = {"path": path, **wrk(base + path, seconds, fresh(base))}
    return results


def site_env(name, redis, site_url):
    """The environment the site runs in for a web benchmark: its own
    database `name`, the private Redis, the benchmark settings, DEBUG off,
    mail dropped."""
    return project_env(
        DATABASE_URL=bench_database_url(name),
        REDIS_URL=redis.url,
        DJANGO_SETTINGS_MODULE="tests.benchmarks.web_settings",
        DEBUG="false",
        SITE_URL=site_url,
        EMAIL_URL="dummymail://",
        LOG_LEVEL="WARNING",
    )


def serve_and_measure(seconds=10, warmup=2):
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with RedisServer() as redis:
        env = site_env("web", redis, f"http://127.0.0.1:{port}")
        manage("migrate", "--noinput", env=env)
        manage("load_seeds", "--no-email", env=env)
        log = open(BENCH_DIR / "gunicorn.log", "w")  # noqa: SIM115
        server = start(
            [
                str(GUNICORN),
                "newsroom.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--no-control-socket",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:

            def up():
                if server.poll() is not None:
                    raise RuntimeError(f"gunicorn exited; see {log.name}")
                try:
                    return get(base + "/bench/trivial/")[0] == 200
                except OSError:
                    return False

            wait_until(up, timeout=30, message="gunicorn")
            time.sleep(0.5)  # let the second worker finish booting too
            return measure(base, seconds, warmup)
        finally:
            stop(server)
            log.close()


def rows(ctx):
    if not shutil.which("wrk"):
        print("bench_web: wrk is missing (apt-get install -y wrk); web figures skipped.")
        return [Row("Web pages (wrk missing: apt-get install -y wrk)", float("nan"))]
    seconds, warmup = (3, 1) if ctx.quick else (10, 2)
    results = ctx.once("web", lambda: serve_and_measure(seconds, warmup))
    trivial = results["trivial"]

    def latency(result):
        errors = f", {result['errors']} non-2xx" if result["errors"] else ""
        return f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms{errors}"

    table = [
        Row(
            f"Web: trivial Django view, {CONNECTIONS} clients",
            trivial["rps"],
            unit="req/s",
            notes=latency(trivial) + "; reference for the pages",
            raw=trivial,
        )
    ]
    for name, label in [
        ("article", "article page"),
        ("home", "home page"),
        ("feed", "RSS feed"),
        ("subscribe", "subscribe POST"),
    ]:
        result = results[name]
        row = Row(
            f"Web: {label} / trivial view",
            result["rps"],
            trivial["rps"],
            unit="req/s",
            reference_label="trivial view",
            notes=latency(result),
            raw=result,
        )
        if name == "article":
            row.target = "≥ 0.5, p99 < 50 ms"
            row.met = row.ratio >= 0.5 and result["p99_ms"] < 50 and not result["errors"]
        if name == "subscribe":
            row.target = "≥ 0.2"
            row.met = row.ratio >= 0.2 and not result["errors"]
        table.append(row)
    return table


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Web throughput against a trivial view.")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk")
    for name, result in serve_and_measure(args.seconds).items():
        print(
            f"{name:10} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.1f} ms  "
            f"p99 {result['p99_ms']:6.1f} ms  non-2xx {result['errors']}  {result['path']}"
        )
