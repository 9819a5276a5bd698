"""Signed links (tokens.py): one purpose each, tamper-proof, expiring where
it matters."""

from datetime import timedelta

import pytest
import time_machine
from django.core import signing
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from subscriptions import tokens
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


class TestFastSigning:
    """tokens.make derives each purpose's HMAC key once instead of on every
    call (a batch call signs thousands of links): its tokens must be Django's
    signing.dumps tokens, byte for byte, so links already sent stay valid."""

    KEYS = ["k1", "x" * 64, "Zq3-_abcDEF0123456789", "ünïcode", 'quote"and\\slash']

    @pytest.mark.parametrize("purpose", ["confirm", "unsubscribe", "preferences", "data"])
    def test_tokens_are_djangos_signing_dumps_byte_for_byte(self, purpose):
        for moment in ("2026-01-01 00:00:00", "2031-07-15 12:34:56"):
            with time_machine.travel(moment, tick=False):
                for key in self.KEYS:
                    expected = signing.dumps(key, salt=f"subscriptions.{purpose}")
                    assert tokens.make(key, purpose) == expected
                    assert tokens.load(tokens.make(key, purpose), purpose) == key

    @given(key=st.text(max_size=40) | st.from_regex(r"[A-Za-z0-9_-]{0,30}", fullmatch=True))
    def test_tokens_for_several_purposes_are_each_djangos(self, key):
        purposes = ("unsubscribe", "preferences", "confirm")
        with time_machine.travel("2030-03-03 03:03:03", tick=False):
            expected = [signing.dumps(key, salt=f"subscriptions.{p}") for p in purposes]
            assert tokens.make_many(key, purposes) == expected

    def test_tokens_made_together_are_each_djangos_signing_dumps(self):
        purposes = ["unsubscribe", "preferences", "confirm"]
        with time_machine.travel("2031-07-15 12:34:56", tick=False):
            for key in self.KEYS:
                expected = [signing.dumps(key, salt=f"subscriptions.{p}") for p in purposes]
                assert tokens.make_many(key, purposes) == expected

    def test_a_batchs_links_are_each_readers_own_links(self, settings):
        """Subscriber.email_links_maker() makes a batch's links with what
        they share looked up once: each is the link the reader's own URL
        methods make, through reverse() and signing.dumps."""
        settings.SUBSCRIPTIONS_SITE_URL = "https://news.example.org"
        readers = [
            Subscriber(email=f"r{i}@example.com", key=key) for i, key in enumerate(self.KEYS)
        ]
        with time_machine.travel("2031-07-15 12:34:56", tick=False):
            links = Subscriber.email_links_maker()
            for reader in readers:
                expected = {
                    "UNSUBSCRIBE": reader.unsubscribe_url(),
                    "ONECLICK": reader.one_click_url(),
                    "PREFERENCES": reader.preferences_url(),
                }
                assert links(reader) == reader.email_links() == expected
                token = expected["PREFERENCES"].rstrip("/").rpartition("/")[2]
                assert token == signing.dumps(reader.key, salt="subscriptions.preferences")

    def test_a_new_secret_key_signs_anew(self, settings):
        with time_machine.travel("2026-01-01 00:00:00", tick=False):
            before = tokens.make("k1", "unsubscribe")
            settings.SECRET_KEY = "another secret"
            after = tokens.make("k1", "unsubscribe")
            assert after != before
            assert after == signing.dumps("k1", salt="subscriptions.unsubscribe")
        with pytest.raises(BadToken):
            tokens.load(before, "unsubscribe")
