"""Hypothesis throws arbitrary input at the subscribe and preferences forms:
never a 500, nothing stored for invalid input, and no CR/LF from any field
ever reaches an email header."""

import email
import email.policy

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subscriptions import emails
from subscriptions.models import Subscriber, normalize_email
from tests.factories import make_subscriber
from tests.subscriptions.topics import TOPICS

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BREAKS = st.sampled_from(["\r\n", "\n", "\r", "\x00", "\u2028", "\x85", "\t", "\x0b"])
HEADERS = st.sampled_from(["Bcc: victim@example.org", "Subject: owned", "To: x@y.z", ""])


SHORT_TEXT = st.text(max_size=40)


@st.composite
def nasty_text(draw, valid=SHORT_TEXT):
    """Valid-looking text with header injection and control characters mixed in."""
    return draw(valid) + draw(BREAKS) + draw(HEADERS) + draw(st.text(max_size=20))


texts = st.one_of(st.text(max_size=120), nasty_text())
addresses = st.one_of(
    st.emails(),
    st.emails().map(lambda a: f"  {a.upper()} "),
    st.emails().flatmap(lambda a: nasty_text(st.just(a))),
    texts,
)
frequencies = st.one_of(st.sampled_from(Subscriber.Frequency.values + [""]), texts)
topic_lists = st.lists(st.one_of(st.sampled_from([k for k, _ in TOPICS]), texts), max_size=4)
EXPECTED_HEADERS = {
    "Content-Type",
    "MIME-Version",
    "Subject",
    "From",
    "To",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",  # the welcome email carries the list headers of every list email
}


def assert_headers_are_clean(subscriber):
    """Both emails the app sends to this subscriber have exactly the expected
    headers, each one line, addressed to the stored address only."""
    mail.outbox.clear()
    emails.confirmation(subscriber).send()
    emails.welcome(subscriber).send()
    assert len(mail.outbox) == 2
    for sent in mail.outbox:
        assert sent.recipients() == [subscriber.email]
        parsed = email.message_from_bytes(sent.message().as_bytes(), policy=email.policy.default)
        assert set(parsed.keys()) <= EXPECTED_HEADERS
        for name, value in parsed.items():
            assert "\r" not in value and "\n" not in value, name
        assert parsed["To"] == subscriber.email
        assert parsed["Subject"].isprintable()


@FUZZ
@given(
    address=addresses,
    name=texts,
    frequency=frequencies,
    topics=topic_lists,
    source=texts,
    form=texts,
    website=st.one_of(st.just(""), texts),
)
def test_the_subscribe_form_survives_anything(
    client, django_settings, address, name, frequency, topics, source, form, website
):
    Subscriber.objects.all().delete()
    data = {
        "email": address,
        "name": name,
        "frequency": frequency,
        "topics": topics,
        "source": source,
        "form": form,
        "website": website,
    }
    response = client.post("/subscribe/", data)
    assert response.status_code in (200, 400)
    stored = list(Subscriber.objects.all())
    if response.status_code == 400 or website:
        assert stored == []
        return
    [subscriber] = stored
    assert subscriber.email == normalize_email(address)
    assert subscriber.name.isprintable() and len(subscriber.name) <= 100
    assert subscriber.frequency in Subscriber.Frequency.values
    assert set(subscriber.topics()) <= {k for k, _ in TOPICS}
    assert subscriber.consent_page.isprintable()
    assert_headers_are_clean(subscriber)


@FUZZ
@given(address=addresses)
def test_a_400_is_exactly_an_invalid_address(client, django_settings, address):
    Subscriber.objects.all().delete()
    response = client.post("/subscribe/", {"email": address})
    try:
        normalize_email(address)
        valid = len(address.strip()) <= 254
    except ValidationError:
        valid = False
    assert response.status_code == (200 if valid else 400)
    assert Subscriber.objects.exists() == valid


@pytest.fixture
def django_settings(settings):
    # Fuzzing is not abuse: no rate limits here (tested elsewhere).
    settings.SUBSCRIPTIONS_RATELIMIT_IP = None
    settings.SUBSCRIPTIONS_RATELIMIT_EMAIL = None
    return settings


@pytest.fixture
def reader():
    return make_subscriber("ann@example.com", name="Ann", topics=["el-paso"])


@FUZZ
@given(name=texts, frequency=frequencies, topics=topic_lists)
def test_the_preferences_form_survives_anything(client, reader, name, frequency, topics):
    reader.refresh_from_db()
    before = reader.export_data()
    url = reverse("subscriptions:preferences", args=[reader.make_token(Subscriber.PREFERENCES)])
    response = client.post(url, {"name": name, "frequency": frequency, "topics": topics})
    assert response.status_code in (200, 400)
    reader.refresh_from_db()
    if response.status_code == 400:
        assert reader.export_data() == before
        return
    assert reader.frequency == frequency
    assert set(reader.topics()) == set(topics)
    assert reader.follows_everything == (not topics)
    assert reader.name.isprintable() and len(reader.name) <= 100
    assert reader.email == "ann@example.com"
    assert_headers_are_clean(reader)


# The post and digest To: header is the one header that carries reader
# input (the name). Whatever the name, it is exactly one address: the
# stored one, with the stored name as its display name.


class _Row:
    """A claimed Delivery or Digest, as the batch hands it to the builder."""

    def __init__(self, subscriber, pk=7, period="daily:2026-12-01"):
        self.subscriber, self.subscriber_id, self.pk, self.period = subscriber, 7, pk, period


def _built(kind, subscriber, raw):
    from subscriptions.models import Mailing
    from tests.subscriptions.test_delivery import Post

    mailing = Mailing(pk=3, **emails.post_snapshot(Post(title="Fuzzed")))
    build = emails.post(mailing) if kind == "post" else emails.digest({7: [mailing]})
    message = build(_Row(subscriber), raw)
    data = message.raw if raw else message.message().as_bytes()
    return email.message_from_bytes(data, policy=email.policy.default)


@pytest.mark.parametrize("kind", ["post", "digest"])
@pytest.mark.parametrize("raw", [True, False], ids=["smtp-bytes", "backend-message"])
@FUZZ
@given(name=texts)
def test_the_to_header_carries_one_address_whatever_the_name(kind, raw, name):
    from subscriptions.models import clean_name

    subscriber = Subscriber(email="reader@example.com", name=clean_name(name))
    parsed = _built(kind, subscriber, raw)
    (to,) = parsed.get_all("To")
    (address,) = to.addresses
    assert address.addr_spec == "reader@example.com"
    assert address.display_name == subscriber.name
    assert parsed["Bcc"] is None and parsed["Cc"] is None
    for header, value in parsed.items():
        assert "\r" not in value and "\n" not in value, header


# Each reader's bytes over SMTP: the template's bytes with the reader's
# values written where its placeholders are. for_reader() makes them in one
# pass, its links signed and laid out by tokens.py's fast paths; here they
# are made the plain way (Django's signing.dumps and reverse(), one replace
# per value), and must come out the same, byte for byte.


def _plain_bytes(template, subscriber, message_id, extra):
    import email.utils

    from django.core import signing
    from django.urls import reverse

    from subscriptions.conf import conf

    def link(name, purpose):
        token = signing.dumps(subscriber.key, salt=f"subscriptions.{purpose}")
        return conf.site_url + reverse(f"subscriptions:{name}", args=[token])

    values = {
        "MESSAGEID": message_id,
        "UNSUBSCRIBE": link("unsubscribe", "unsubscribe"),
        "ONECLICK": link("one_click", "unsubscribe"),
        "PREFERENCES": link("preferences", "preferences"),
        **extra,
        "TO": email.utils.formataddr((subscriber.name, subscriber.email), charset="utf-8"),
    }
    data = template.raw()
    for name, value in values.items():
        data = data.replace(emails.placeholder(name).encode(), value.replace("\n", "\r\n").encode())
    return data


@FUZZ
@given(
    name=texts,
    key=st.text(min_size=1, max_size=64),
    body=st.text(max_size=300),
    digest_items=st.text(max_size=200),
)
def test_a_readers_bytes_are_the_template_with_their_values_written_in(
    name, key, body, digest_items
):
    import time_machine

    from subscriptions.models import clean_name

    subscriber = Subscriber(email="reader@example.com", name=clean_name(name), key=key)
    ph = emails.placeholder
    text = f"{body}\n{ph('UNSUBSCRIBE')} {ph('PREFERENCES')}\n{ph('ITEMSTEXT')}\n{ph('NOSUCH')}"
    html = f"<p>{body}</p><a href='{ph('UNSUBSCRIBE')}'>x</a>{ph('ITEMSHTML')}{ph('ONECLICK')}"
    template = emails.MessageTemplate("A subject", text, html)
    extra = {"ITEMSHTML": f"<p>{digest_items}</p>", "ITEMSTEXT": digest_items}
    with time_machine.travel("2026-12-01 12:00:00", tick=False):
        built = template.for_reader(subscriber, "m1.abc@example.com", True, **extra)
        assert built.raw == _plain_bytes(template, subscriber, "m1.abc@example.com", extra)
