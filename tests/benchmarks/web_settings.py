"""Settings for the web benchmark: the site's own, plus a trivial view to
compare with (tests/benchmarks/urls.py) and subscribe rate limits raised far
above what a load generator sends, so the subscribe POST is measured doing its
real work (the rate-limit checks included) instead of answering 429."""

from newsroom.settings import *  # noqa: F403

ROOT_URLCONF = "tests.benchmarks.urls"
SUBSCRIPTIONS_RATELIMIT_IP = "100000000/m"
SUBSCRIPTIONS_RATELIMIT_EMAIL = "100000000/m"
