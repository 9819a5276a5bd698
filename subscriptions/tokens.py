"""Signed links: the tokens in confirm, unsubscribe and preferences URLs.

A token is the subscriber's random key signed with Django's signing, salted
per purpose: a confirmation link cannot unsubscribe, an unsubscribe link
cannot open the preferences. No id ever appears in a public URL.

The preferences link is in every email and never expires, so it opens the
preferences only: the data download and the erasure take a DATA link, valid
for DATA_LINK_MAX_AGE, that is emailed to the address when asked for.
"""

import binascii
import functools
import json
import time
from json.encoder import encode_basestring_ascii

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils.crypto import salted_hmac

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
    """signing.dumps(key, salt=f"subscriptions.{purpose}"), byte for byte
    (so load() and every link already sent agree), made faster for a
    provider's batch call that signs thousands a second: the HMAC key
    Django's signing derives on each call is derived once per purpose and
    SECRET_KEY, and copied."""
    return make_many(key, (purpose,))[0]


def make_many(key, purposes):
    """make(key, purpose) for each of `purposes`, in order: the signed value
    (the key and the time) is made once for all of them."""
    return signer(purposes)(key)


def signer(purposes):
    """make_many(·, purposes) for many keys (a batch's readers): each
    purpose's HMAC looked up once, not once per key."""
    macs = [_mac(settings.SECRET_KEY, purpose) for purpose in purposes]

    def sign(key):
        value = f"{_encoded(key)}:{_base62(int(time.time()))}"
        data, signed = value.encode(), []
        for mac in macs:  # signing's signature: the keyed HMAC copied, base64
            mac = mac.copy()
            mac.update(data)
            signed.append(f"{value}:{_b64(mac.digest())}")
        return signed

    return sign


def _b64(data):
    """signing.b64_encode(data).decode()."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_URLSAFE).decode()


# base64's URL-safe alphabet (signing.b64_encode: urlsafe_b64encode).
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _encoded(key):
    # json.dumps(key, separators=(",", ":")) is, for a string,
    # encode_basestring_ascii(key) (JSONEncoder.encode), without making an
    # encoder for each call.
    text = encode_basestring_ascii(key) if isinstance(key, str) else _dumps(key)
    return _b64(text.encode("latin-1"))


def _dumps(key):
    return json.dumps(key, separators=(",", ":"))


@functools.lru_cache(maxsize=2)
def _base62(seconds):
    return signing.b62_encode(seconds)


@functools.lru_cache(maxsize=16)
def _mac(secret, purpose):
    # What signing.Signer.signature() computes before it hashes the value:
    # salted_hmac(salt + "signer", value, SECRET_KEY, algorithm="sha256").
    return keyed(salted_hmac(f"subscriptions.{purpose}signer", b"", secret, algorithm="sha256"))


def keyed(mac):
    """An HMAC with its key set (salted_hmac's, of an empty message), to be
    copied for each message: OpenSSL's own HMAC object where hmac.HMAC wraps
    one (its copy() is a third of the wrapper's), the same digests."""
    return getattr(mac, "_hmac", None) or mac


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
    """The path of subscriptions:<name> around its token: (before, after)."""
    before, _, after = path(name, "TOKEN").partition("TOKEN")
    return before, after


def url(name, token, site=None):
    """The absolute URL of subscriptions:<name> for `token`, resolving the
    URL once per name: emails make thousands of these a second. `site`:
    conf.site_url, when the caller has it already."""
    before, after = _pattern(name)
    return f"{conf.site_url if site is None else site}{before}{token}{after}"


def around(name):
    """(before, after): url(name, token) is before + token + after."""
    before, after = _pattern(name)
    return conf.site_url + before, after
