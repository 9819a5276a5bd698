import pytest


@pytest.fixture(autouse=True)
def _topics(settings):
    settings.SUBSCRIPTIONS_TOPICS = "tests.subscriptions.topics.topics"


@pytest.fixture
def provider():
    """A local stand-in for Mailgun's and Postmark's send APIs (tests/providers.py)."""
    from tests.providers import FakeProvider

    fake = FakeProvider()
    yield fake
    fake.close()
