"""Settings read from the environment: each case loads newsroom.settings in a
fresh interpreter with exactly that environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def load_settings(*names, **env):
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SITE_URL", "PORT", "NEWSROOM_PORT", "RATELIMIT_IP_META_KEY", "ALLOWED_HOSTS")
    }
    environment.update({"SECRET_KEY": "test", **env})
    code = (
        "import json, newsroom.settings as s; "
        f"print(json.dumps({{n: getattr(s, n, None) for n in {list(names)!r}}}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def test_ratelimit_ip_meta_key_is_read_from_the_environment():
    assert load_settings("RATELIMIT_IP_META_KEY") == {"RATELIMIT_IP_META_KEY": None}
    assert load_settings("RATELIMIT_IP_META_KEY", RATELIMIT_IP_META_KEY="HTTP_X_REAL_IP") == {
        "RATELIMIT_IP_META_KEY": "HTTP_X_REAL_IP"
    }


def test_site_url_follows_the_port_make_run_serves_on():
    default = "http://127.0.0.1:8000"
    assert load_settings("SITE_URL") == {"SITE_URL": default}
    assert load_settings("SITE_URL", PORT="8123") == {"SITE_URL": "http://127.0.0.1:8123"}
    # Under honcho each process has a PORT of its own; the Makefile's wins.
    assert load_settings("SITE_URL", "CSRF_TRUSTED_ORIGINS", PORT="5100", NEWSROOM_PORT="8123") == {
        "SITE_URL": "http://127.0.0.1:8123",
        "CSRF_TRUSTED_ORIGINS": ["http://127.0.0.1:8123"],
    }
    assert load_settings("SITE_URL", PORT="8123", SITE_URL="https://news.example/") == {
        "SITE_URL": "https://news.example"
    }


def test_database_connections_are_kept_between_requests_unless_the_url_says_otherwise():
    kept = load_settings("DATABASES")["DATABASES"]["default"]
    assert (kept["CONN_MAX_AGE"], kept["CONN_HEALTH_CHECKS"]) == (600, True)
    url = "postgres://app:app@127.0.0.1:5433/app?conn_max_age=0"
    per_request = load_settings("DATABASES", DATABASE_URL=url)["DATABASES"]["default"]
    assert per_request["CONN_MAX_AGE"] == 0
