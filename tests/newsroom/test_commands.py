"""wait_for_redis: what `make run`'s worker runs before loading the seeds."""

import time

import pytest
from django.core.management import CommandError, call_command

from tests.support import free_port


def test_it_returns_at_once_when_redis_answers():
    started = time.monotonic()
    call_command("wait_for_redis", "--timeout", "5")
    assert time.monotonic() - started < 2


def test_it_says_what_to_check_when_redis_never_answers(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/1",
        }
    }
    with pytest.raises(CommandError, match="Redis did not answer within 0.5 s.*REDIS_URL"):
        call_command("wait_for_redis", "--timeout", "0.5")
