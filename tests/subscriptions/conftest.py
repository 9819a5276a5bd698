import pytest


@pytest.fixture(autouse=True)
def _topics(settings):
    settings.SUBSCRIPTIONS_TOPICS = "tests.subscriptions.topics.topics"
    # The small list is searched in Python (the app's fallback).
    settings.SUBSCRIPTIONS_TOPIC_SEARCH = None
