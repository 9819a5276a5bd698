"""Signed links: the tokens in confirm, unsubscribe and preferences URLs.

A token is the subscriber's random key signed with Django's signing, salted
per purpose: a confirmation link cannot unsubscribe, an unsubscribe link
cannot open the preferences. No id ever appears in a public URL.

The preferences link is in every email and never expires, so it opens the
preferences only: the data download and the erasure take a DATA link, valid
for DATA_LINK_MAX_AGE, that is emailed to the address when asked for.
"""

import functools

from django.core import signing
from django.urls import reverse

from .conf import conf

CONFIRM = "confirm"
UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
DATA = "data"


class BadToken(Exception):
    """A link whose token is tampered with, meant for another purpose, or
    for a subscriber who no longer exists."""

    message = "This link is not valid. Please use the latest link we sent you."


class ExpiredToken(BadToken):
    message = "This link has expired. Subscribe again and we will send you a new one."


class ExpiredDataLink(ExpiredToken):
    message = (
        "This link has expired. Ask for a new one on your subscription page "
        "(the preferences link in any of our emails)."
    )


def make(key, purpose):
    return signing.dumps(key, salt=f"subscriptions.{purpose}")


def load(token, purpose):
    """The key a token signs; raises BadToken or ExpiredToken."""
    max_age = {CONFIRM: conf.CONFIRM_MAX_AGE, DATA: conf.DATA_LINK_MAX_AGE}.get(
        purpose, conf.LINK_MAX_AGE
    )
    try:
        return str(signing.loads(token, salt=f"subscriptions.{purpose}", max_age=max_age))
    except signing.SignatureExpired:
        raise (ExpiredDataLink if purpose == DATA else ExpiredToken) from None
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
