"""Signed links (tokens.py): one purpose each, tamper-proof, expiring where
it matters."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from subscriptions.models import Subscriber
from subscriptions.tokens import BadToken, ExpiredToken
from tests.factories import make_subscriber

Status = Subscriber.Status


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
