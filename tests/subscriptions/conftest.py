import pytest


@pytest.fixture(autouse=True)
def _topics(settings):
    settings.SUBSCRIPTIONS_TOPICS = "tests.subscriptions.topics.topics"
