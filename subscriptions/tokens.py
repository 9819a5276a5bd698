"""Signed links: the tokens in confirm, unsubscribe and preferences URLs.

A token is the subscriber's random key signed with Django's signing, salted
per purpose: a confirmation link cannot unsubscribe, an unsubscribe link
cannot open the preferences. No id ever appears in a public URL.
"""

import functools

from django.core import signing
from django.urls import reverse

from .conf import conf

CONFIRM = "confirm"
UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"


class BadToken(Exception):
    """A link whose token is tampered with, meant for another purpose, or
    for a subscriber who no longer exists."""

    message = "This link is not valid. Please use the latest link we sent you."


class ExpiredToken(BadToken):
    message = "This link has expired. Subscribe again and we will send you a new one."


def make(key, purpose):
    return signing.dumps(key, salt=f"subscriptions.{purpose}")


def load(token, purpose):
    """The key a token signs; raises BadToken or ExpiredToken."""
    max_age = conf.CONFIRM_MAX_AGE if purpose == CONFIRM else conf.LINK_MAX_AGE
    try:
        return str(signing.loads(token, salt=f"subscriptions.{purpose}", max_age=max_age))
    except signing.SignatureExpired:
        raise ExpiredToken from None
    except signing.BadSignature:
        raise BadToken from None


def path(name, token):
    return reverse(f"subscriptions:{name}", args=[token])


@functools.lru_cache
def _pattern(name):
    return path(name, "TOKEN")


def url(name, token):
    """The absolute URL of subscriptions:<name> for `token`, resolving the
    URL once per name: emails make thousands of these a second."""
    return conf.absolute_url(_pattern(name).replace("TOKEN", token))
