"""Wait until Redis (the shared cache and the Celery broker) answers.

`make run` starts Redis and this in parallel (Procfile): the seeds are
loaded only once it answers, so their page-cache bumps and their announce
reach it at once instead of failing with a traceback and waiting for the
sweeper. Changes nothing, so it is safe to run any number of times.
"""

import time

from django.core.management.base import BaseCommand, CommandError
from django_redis import get_redis_connection


class Command(BaseCommand):
    help = "Wait until the Redis of the cache and the broker answers (at most --timeout seconds)."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=30.0)

    def handle(self, *args, timeout, **options):
        deadline = time.monotonic() + timeout
        while True:
            try:
                get_redis_connection("default").ping()
                return
            except Exception as e:  # noqa: BLE001 - not up yet: any error means wait
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"Redis did not answer within {timeout:g} s ({e}). "
                        "Is REDIS_URL right, and is the server running?"
                    ) from None
                time.sleep(0.1)
