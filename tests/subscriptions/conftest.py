import importlib
import warnings

import pytest
from django.urls import clear_url_caches
from django.utils.deprecation import RemovedInDjango60Warning


@pytest.fixture(autouse=True)
def _topics(settings):
    settings.SUBSCRIPTIONS_TOPICS = "tests.subscriptions.topics.topics"
    # The small list is searched in Python (the app's fallback).
    settings.SUBSCRIPTIONS_TOPIC_SEARCH = None


@pytest.fixture
def provider():
    """A local stand-in for Mailgun's and Postmark's send APIs (tests/providers.py)."""
    from tests.providers import FakeProvider

    fake = FakeProvider()
    yield fake
    fake.close()


@pytest.fixture
def mount(settings):
    """mount(**anymail_settings): set ANYMAIL and load the URLconf again."""
    import newsroom.urls

    def reload():
        clear_url_caches()
        with warnings.catch_warnings():
            # The URLconf registers its path converter again.
            warnings.simplefilter("ignore", RemovedInDjango60Warning)
            importlib.reload(newsroom.urls)

    def load(**anymail):
        settings.ANYMAIL = anymail
        reload()

    yield load
    del settings.ANYMAIL
    reload()
