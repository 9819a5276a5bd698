from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from subscriptions.models import (
    BadToken,
    Consent,
    ExpiredToken,
    Follow,
    Subscriber,
    clean_name,
    normalize_email,
)
from tests.factories import make_subscriber

Status = Subscriber.Status
CONSENT = Consent(wording="Discover more. Subscribe.", page="http://testserver/x/", ip="10.0.0.1")


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
class TestSubscribe:
    def test_it_creates_a_pending_subscriber_with_the_consent_record(self):
        subscriber = Subscriber.objects.subscribe(
            " Ann@Example.com ",
            name="Ann",
            frequency=Subscriber.Frequency.WEEKLY,
            topics=["el-paso", "jeff-sessions"],
            consent=Consent(
                wording="Follow El Paso by email.",
                page="http://testserver/places/el-paso/",
                ip="10.0.0.9",
                user_agent="Firefox",
            ),
        )
        subscriber.refresh_from_db()
        assert subscriber.email == "Ann@example.com"
        assert subscriber.status == Status.PENDING
        assert subscriber.frequency == "weekly"
        assert not subscriber.follows_everything
        assert subscriber.topics() == ["el-paso", "jeff-sessions"]
        assert subscriber.consent_wording == "Follow El Paso by email."
        assert subscriber.consent_page == "http://testserver/places/el-paso/"
        assert subscriber.consent_ip == "10.0.0.9"
        assert subscriber.consent_user_agent == "Firefox"
        assert subscriber.consent_at is not None
        assert subscriber.confirmation_sent_at is not None

    def test_one_address_is_one_subscriber_however_it_is_spelled(self):
        Subscriber.objects.subscribe("ann@bücher.example", consent=CONSENT)
        Subscriber.objects.subscribe(" ann@XN--BCHER-KVA.example", consent=CONSENT)
        assert Subscriber.objects.count() == 1

    def test_a_pending_address_gets_one_confirmation_per_window(self):
        first = Subscriber.objects.subscribe("ann@example.com", consent=CONSENT)
        sent_at = first.confirmation_sent_at
        with time_machine.travel(timezone.now() + timedelta(minutes=59)):
            again = Subscriber.objects.subscribe("ann@example.com", consent=CONSENT)
            assert not again.request_confirmation()
        assert again.confirmation_sent_at == sent_at
        with time_machine.travel(timezone.now() + timedelta(minutes=61)):
            later = Subscriber.objects.subscribe("ann@example.com", consent=CONSENT)
        assert later.confirmation_sent_at > sent_at

    def test_it_leaves_a_confirmed_subscriber_exactly_as_it_was(self):
        subscriber = make_subscriber("ann@example.com", name="Ann", topics=["el-paso"])
        Subscriber.objects.subscribe(
            "ann@example.com", name="Mallory", topics=["jeff-sessions"], consent=CONSENT
        )
        subscriber.refresh_from_db()
        assert (subscriber.status, subscriber.name, subscriber.topics()) == (
            Status.CONFIRMED,
            "Ann",
            ["el-paso"],
        )
        assert subscriber.confirmation_sent_at is None

    def test_a_suppressed_address_is_never_asked_again(self):
        subscriber = make_subscriber("ann@example.com", status=Status.SUPPRESSED)
        Subscriber.objects.subscribe("ann@example.com", consent=CONSENT)
        subscriber.refresh_from_db()
        assert subscriber.status == Status.SUPPRESSED
        assert subscriber.confirmation_sent_at is None

    def test_an_unsubscribed_reader_can_come_back_through_opt_in(self):
        subscriber = make_subscriber("ann@example.com", status=Status.UNSUBSCRIBED)
        Subscriber.objects.subscribe("ann@example.com", topics=["el-paso"], consent=CONSENT)
        subscriber.refresh_from_db()
        assert subscriber.status == Status.PENDING
        assert subscriber.topics() == ["el-paso"]
        assert subscriber.confirm()
        assert subscriber.status == Status.CONFIRMED


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
class TestTokens:
    def test_a_token_finds_its_subscriber(self):
        subscriber = make_subscriber()
        token = subscriber.make_token(Subscriber.UNSUBSCRIBE)
        assert Subscriber.from_token(token, Subscriber.UNSUBSCRIBE) == subscriber

    def test_a_tampered_token_is_refused(self):
        token = make_subscriber().make_token(Subscriber.CONFIRM)
        with pytest.raises(BadToken):
            Subscriber.from_token(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), "confirm")

    def test_a_token_for_another_purpose_is_refused(self):
        token = make_subscriber().make_token(Subscriber.CONFIRM)
        for purpose in (Subscriber.UNSUBSCRIBE, Subscriber.PREFERENCES):
            with pytest.raises(BadToken):
                Subscriber.from_token(token, purpose)

    def test_a_confirmation_token_expires(self, settings):
        settings.SUBSCRIPTIONS_CONFIRM_MAX_AGE = timedelta(days=7)
        token = make_subscriber(status=Status.PENDING).make_token(Subscriber.CONFIRM)
        with time_machine.travel(timezone.now() + timedelta(days=6, hours=23)):
            Subscriber.from_token(token, Subscriber.CONFIRM)
        with time_machine.travel(timezone.now() + timedelta(days=7, minutes=1)):
            with pytest.raises(ExpiredToken):
                Subscriber.from_token(token, Subscriber.CONFIRM)

    def test_a_token_of_an_erased_subscriber_is_refused(self):
        subscriber = make_subscriber()
        token = subscriber.make_token(Subscriber.PREFERENCES)
        subscriber.erase()
        with pytest.raises(BadToken):
            Subscriber.from_token(token, Subscriber.PREFERENCES)


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
