import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from subscriptions.models import Follow, Subscriber, clean_name, normalize_email
from tests.factories import make_subscriber

Status = Subscriber.Status


@pytest.mark.parametrize(
    "raw, stored",
    [
        ("  Ann@Example.COM \n", "Ann@example.com"),
        ("ann@BÜCHER.example", "ann@xn--bcher-kva.example"),
        ("ann@xn--bcher-kva.example", "ann@xn--bcher-kva.example"),
        ("o'brien+news@sub.example.org", "o'brien+news@sub.example.org"),
    ],
)
def test_it_normalises_addresses(raw, stored):
    assert normalize_email(raw) == stored


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "no-at-sign",
        "@example.com",
        "ann@",
        "ann@exa mple.com",
        "ann@example.com\r\nBcc: x@evil.example",
        '"ann\x01"@example.com',
        "ann@" + "a" * 64 + ".com",
        "a" * 250 + "@example.com",
        "ann@example..com",
    ],
)
def test_it_refuses_bad_addresses(raw):
    with pytest.raises(ValidationError):
        normalize_email(raw)


def test_clean_name_keeps_one_printable_line():
    assert (
        clean_name(" Ann\r\nBcc: x@evil.example\t\x00 Lee\u2028 ") == "Ann Bcc: x@evil.example Lee"
    )
    assert len(clean_name("x" * 500)) == 100


@pytest.mark.django_db
class TestStateChanges:
    def test_confirm_happens_once(self):
        subscriber = make_subscriber(status=Status.PENDING)
        assert subscriber.confirm() is True
        assert subscriber.confirm() is False
        assert subscriber.status == Status.CONFIRMED
        assert subscriber.confirmed_at is not None

    def test_an_old_confirmation_link_does_not_bring_back_a_reader_who_left(self):
        subscriber = make_subscriber(status=Status.UNSUBSCRIBED)
        assert subscriber.confirm() is False
        assert subscriber.status == Status.UNSUBSCRIBED

    def test_unsubscribe_happens_once_and_keeps_suppression(self):
        subscriber = make_subscriber()
        assert subscriber.unsubscribe() is True
        assert subscriber.unsubscribe() is False
        assert subscriber.unsubscribed_at is not None
        suppressed = make_subscriber(status=Status.SUPPRESSED)
        assert suppressed.unsubscribe() is False
        assert suppressed.status == Status.SUPPRESSED

    def test_set_follows_replaces_the_topics(self):
        subscriber = make_subscriber(topics=["el-paso", "jeff-sessions"])
        subscriber.set_follows(["jeff-sessions", "justice-department"])
        assert subscriber.topics() == ["jeff-sessions", "justice-department"]
        subscriber.set_follows([])
        subscriber.refresh_from_db()
        assert subscriber.follows_everything and subscriber.topics() == []


@pytest.mark.django_db
class TestQueries:
    def test_following_matches_everything_followers_and_topic_followers(self):
        everything = make_subscriber()
        paso = make_subscriber(topics=["el-paso"])
        make_subscriber(topics=["jeff-sessions"])
        found = Subscriber.objects.following(["el-paso", "justice-department"])
        assert set(found) == {everything, paso}

    def test_delivery_can_walk_confirmed_instant_followers_in_one_query_per_page(self):
        for i in range(30):
            make_subscriber(topics=["el-paso"] if i % 2 else ())
        make_subscriber(status=Status.PENDING)
        make_subscriber(frequency=Subscriber.Frequency.DAILY)
        page = (
            Subscriber.objects.confirmed()
            .filter(frequency=Subscriber.Frequency.INSTANT, pk__gt=0)
            .following(["el-paso"])
            .order_by("pk")
        )
        with CaptureQueriesContext(connection) as queries:
            rows = list(page[:100])
        assert len(rows) == 30
        assert len(queries) == 1

    def test_counts_by_status(self):
        make_subscriber()
        make_subscriber()
        make_subscriber(status=Status.PENDING)
        counts = Subscriber.objects.counts_by_status()
        assert counts == {
            Status.PENDING: 1,
            Status.CONFIRMED: 2,
            Status.UNSUBSCRIBED: 0,
            Status.SUPPRESSED: 0,
        }

    def test_follows_are_deleted_with_their_subscriber(self):
        make_subscriber(topics=["el-paso"]).erase()
        assert Follow.objects.count() == 0


def test_a_local_part_over_64_characters_is_refused_with_a_message():
    assert normalize_email("a" * 64 + "@example.com") == "a" * 64 + "@example.com"
    with pytest.raises(ValidationError, match="before the @ can be at most 64 characters"):
        normalize_email("a" * 65 + "@example.com")


@pytest.mark.django_db
def test_the_form_refuses_a_long_local_part_and_stores_nothing(client):
    response = client.post("/subscribe/", {"email": "a" * 65 + "@example.com"})
    assert response.status_code == 400
    assert b"at most 64 characters" in response.content
    assert not Subscriber.objects.exists()
