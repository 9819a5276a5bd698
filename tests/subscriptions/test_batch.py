"""A provider's batch API (subscriptions/providers.py): many readers in one
call, through the real django-anymail backends, against the local fakes of
Mailgun's, Postmark's and SparkPost's APIs (tests/providers.py), which fill
each recipient's merge fields as the providers document."""

import math
import re
import signal
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import time_machine
from django.urls import Resolver404, resolve
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import subscriptions
from subscriptions import delivery, emails, tokens, transports
from subscriptions.models import MAX_ID, Delivery, Mailing, Subscriber
from tests.factories import make_subscriber
from tests.providers import anymail_settings
from tests.subscriptions.test_delivery import Post, readers, wait_for_done, worker
from tests.support import wait_until

S = Subscriber.Status
PROVIDERS = ["mailgun", "postmark", "sparkpost"]


def _message(name, fields):
    """(To, {header: value}, text, html) of what one recipient gets."""
    if name == "mailgun":
        headers = {k[2:].lower(): v[0] for k, v in fields.items() if k.startswith("h:")}
        return fields["to"][0], headers, fields["text"][0], fields["html"][0]
    if name == "postmark":
        headers = {h["Name"].lower(): h["Value"] for h in fields.get("Headers", [])}
        return fields["To"], headers, fields["TextBody"], fields["HtmlBody"]
    headers = {k.lower(): v for k, v in fields["headers"].items()}
    return fields["to"], headers, fields["text"], fields["html"]


def _token(url, name):
    match = resolve(urlsplit(url).path)
    assert match.url_name == name, url
    return match.kwargs["token"]


def _send(post, capture, times=1):
    mailing, _ = delivery.announce(post)
    with capture(execute=False):
        delivery.fan_out(mailing.pk)
        for _ in range(times):
            delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    return mailing


def _again(mailing, capture):
    """The next run of the mailing's batch, its retries due now."""
    Delivery.objects.filter(mailing=mailing, status=Delivery.Status.PENDING).update(
        next_attempt_at=None
    )
    with capture(execute=False):
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)


def _status(mailing):
    return {
        d.subscriber.email: d.status
        for d in Delivery.objects.filter(mailing=mailing).select_related("subscriber")
    }


@pytest.fixture
def use(provider, settings):
    def use(name, **options):
        settings.EMAIL_BACKEND, settings.ANYMAIL = anymail_settings(provider, name, **options)

    return use


@pytest.mark.django_db
@pytest.mark.parametrize("name", PROVIDERS)
def test_each_reader_gets_one_message_with_their_own_links_and_headers(
    name, use, provider, settings, django_capture_on_commit_callbacks
):
    use(name)
    settings.SUBSCRIPTIONS_RECIPIENTS_PER_CALL = 3
    group = [make_subscriber(f"r{i}@example.com", name=f"Reader {i}") for i in range(7)]
    mailing = _send(Post(title="One call, many readers"), django_capture_on_commit_callbacks)

    assert provider.calls[name] == 3  # ⌈7 / 3⌉
    assert sorted(n for _, n in provider.batches) == [1, 3, 3]
    assert provider.recipients() == Counter({r.email: 1 for r in group})
    by_reader = {recipients[0]: fields for _, recipients, fields in provider.accepted}
    for reader in group:
        to, headers, text, html = _message(name, by_reader[reader.email])
        assert to == f"{reader.name} <{reader.email}>"
        assert "QZXPLACEHOLDER" not in text + html + str(headers)
        assert "%recipient" not in text + html + str(headers) and "{{" not in text + html
        # Their own one-click link, in List-Unsubscribe, as RFC 8058 asks.
        one_click = headers["list-unsubscribe"].split(",")[0].strip("<>")
        token = _token(one_click, "one_click")
        assert Subscriber.from_token(token, Subscriber.UNSUBSCRIBE) == reader
        assert headers["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"
        expected_id = emails.message_id(f"m{mailing.pk}", reader.pk)
        assert headers["message-id"] == f"<{expected_id}>"
        # Their own preferences and unsubscribe links in both parts.
        for part in (text, html):
            assert _readers_of_links(part) == {
                "unsubscribe": {reader},
                "preferences": {reader},
            }, part[:500]
    assert set(_status(mailing).values()) == {Delivery.Status.SENT}
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE


def _readers_of_links(part):
    """{link name: {the readers its tokens are for}} of a message part."""
    purposes = {"unsubscribe": Subscriber.UNSUBSCRIBE, "preferences": Subscriber.PREFERENCES}
    found = {}
    for url in re.findall(r"https?://[^\s\"'<>]+", part):
        try:
            match = resolve(urlsplit(url).path)
        except Resolver404:
            continue
        if match.url_name in purposes:
            reader = Subscriber.from_token(match.kwargs["token"], purposes[match.url_name])
            found.setdefault(match.url_name, set()).add(reader)
    return found


@pytest.mark.django_db
@pytest.mark.parametrize("name, limit", [("mailgun", 1000), ("postmark", 500)])
def test_one_call_carries_the_providers_limit_of_readers(
    name, limit, use, provider, settings, django_capture_on_commit_callbacks
):
    use(name)
    settings.SUBSCRIPTIONS_BATCH_SIZE = 2 * limit
    Subscriber.objects.bulk_create(
        Subscriber(email=f"bulk{i}@example.com", status=S.CONFIRMED, follows_everything=True)
        for i in range(limit + 1)
    )
    _send(Post(), django_capture_on_commit_callbacks)
    assert sorted(n for _, n in provider.batches) == [1, limit]
    assert provider.calls[name] == 2
    assert len(provider.recipients()) == limit + 1 and max(provider.recipients().values()) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["mailgun", "sparkpost"])
def test_one_invalid_address_refusing_the_whole_call_is_found_and_the_rest_go(
    name, use, provider, django_capture_on_commit_callbacks
):
    """Mailgun answers 400 (SparkPost 422) for the whole call: the call is
    split until the address is found; it fails and is suppressed."""
    use(name)
    group = [make_subscriber(f"r{i}@example.com") for i in range(16)]
    bad = group[11]
    provider.invalid.add(bad.email)
    mailing = _send(Post(), django_capture_on_commit_callbacks)

    assert provider.recipients() == Counter({r.email: 1 for r in group if r != bad})
    # One call, then two halves and so on down to the address: log2(16) levels.
    assert provider.calls[name] <= 1 + 2 * math.ceil(math.log2(16))
    row = Delivery.objects.get(mailing=mailing, subscriber=bad)
    assert row.status == Delivery.Status.FAILED and row.permanent
    assert bad.email not in row.error
    assert Subscriber.objects.get(pk=bad.pk).status == S.SUPPRESSED
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE


@pytest.mark.django_db
def test_postmark_answers_each_message_of_a_batch_call(
    use, provider, django_capture_on_commit_callbacks
):
    use("postmark")
    group = [make_subscriber(f"r{i}@example.com") for i in range(6)]
    invalid, inactive = group[1], group[4]
    provider.invalid.add(invalid.email)
    provider.inactive.add(inactive.email)
    mailing = _send(Post(), django_capture_on_commit_callbacks)

    assert provider.calls["postmark"] == 1
    assert provider.recipients() == Counter(
        {r.email: 1 for r in group if r not in (invalid, inactive)}
    )
    rows = {d.subscriber_id: d for d in Delivery.objects.filter(mailing=mailing)}
    for reader, code in ((invalid, "300"), (inactive, "406")):
        row = rows[reader.pk]
        assert row.status == Delivery.Status.FAILED and row.permanent, row.error
        assert f"ErrorCode {code}" in row.error
        assert Subscriber.objects.get(pk=reader.pk).status == S.SUPPRESSED
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE


@pytest.mark.django_db
@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("trouble", ["throttled", "unavailable"])
def test_a_call_answered_429_or_503_is_tried_again_and_everyone_gets_one(
    name, trouble, use, provider, settings, django_capture_on_commit_callbacks
):
    use(name)
    settings.SUBSCRIPTIONS_RECIPIENTS_PER_CALL = 4
    group = [make_subscriber(f"r{i}@example.com") for i in range(10)]
    getattr(provider, trouble)[group[5].email] = 1  # the second call's answer
    mailing = _send(Post(), django_capture_on_commit_callbacks)

    # The first call went; the second was refused whole: nobody of it got
    # anything. A 429 holds the batch (nobody's attempts spent, no call
    # after it); a 503 is those readers' to retry, and the third call goes.
    rows = list(Delivery.objects.filter(mailing=mailing, status=Delivery.Status.PENDING))
    if trouble == "throttled":
        assert provider.recipients() == Counter({r.email: 1 for r in group[:4]})
        assert provider.calls[name] == 2
        assert {d.subscriber_id for d in rows} == {r.pk for r in group[4:]}
        assert {(d.attempts, d.error[:9]) for d in rows} == {(0, "held: 429")}
    else:
        assert provider.recipients() == Counter({r.email: 1 for r in group[:4] + group[8:]})
        assert {d.subscriber_id for d in rows} == {r.pk for r in group[4:8]}
        assert {(d.attempts, d.error[:3]) for d in rows} == {(1, "503")}
    assert all(not d.permanent and d.next_attempt_at for d in rows)

    _again(mailing, django_capture_on_commit_callbacks)
    _again(mailing, django_capture_on_commit_callbacks)
    assert provider.recipients() == Counter({r.email: 1 for r in group})
    assert set(_status(mailing).values()) == {Delivery.Status.SENT}
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE


@pytest.mark.django_db
def test_a_call_never_answered_is_retried_for_all_its_readers_flagged_ambiguous(
    use, provider, settings, django_capture_on_commit_callbacks
):
    use("mailgun", timeout=1)
    settings.SUBSCRIPTIONS_RECIPIENTS_PER_CALL = 3
    group = [make_subscriber(f"r{i}@example.com") for i in range(5)]
    provider.hanging.add(group[1].email)
    mailing = _send(Post(), django_capture_on_commit_callbacks)
    rows = {d.subscriber_id: d for d in Delivery.objects.filter(mailing=mailing)}
    for reader in group[:3]:  # the call may have gone through: nobody knows
        row = rows[reader.pk]
        assert (row.status, row.attempts, row.ambiguous) == (Delivery.Status.PENDING, 1, True)
        assert "no answer" in row.error
    for reader in group[3:]:  # the next call went
        assert rows[reader.pk].status == Delivery.Status.SENT and not rows[reader.pk].ambiguous
    provider.hanging.clear()
    _again(mailing, django_capture_on_commit_callbacks)
    assert provider.recipients() == Counter({r.email: 1 for r in group})
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE


@pytest.mark.django_db
def test_a_call_never_carries_more_readers_than_a_second_of_max_rate(
    use, provider, settings, django_capture_on_commit_callbacks
):
    use("mailgun")
    settings.SUBSCRIPTIONS_MAX_RATE = 5
    group = [make_subscriber(f"r{i}@example.com") for i in range(12)]
    _send(Post(), django_capture_on_commit_callbacks)
    assert [n for _, n in provider.batches] == [5, 5, 2]
    assert provider.recipients() == Counter({r.email: 1 for r in group})


@pytest.mark.django_db
def test_digests_go_one_message_per_reader_through_a_batch_provider(
    use, provider, django_capture_on_commit_callbacks
):
    """A digest's body differs per reader: it has no template to batch."""
    from subscriptions.models import Digest

    use("mailgun")
    group = [
        make_subscriber(f"d{i}@example.com", frequency=Subscriber.Frequency.DAILY) for i in range(3)
    ]
    _send(Post(), django_capture_on_commit_callbacks)
    with time_machine.travel(datetime.now(UTC) + timedelta(days=1, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()
            delivery.send_digest_batch(0, MAX_ID)
    assert provider.recipients() == Counter({r.email: 1 for r in group})
    assert provider.calls["mailgun"] == 3
    assert set(Digest.objects.values_list("status", flat=True)) == {Digest.Status.SENT}


# Limits: the daily cap and the warm-up, with the clock controlled.


def test_the_daily_cap_is_shared_by_every_worker(settings):
    """Twenty workers (threads, one Redis) asking at once get the cap, no more."""
    settings.SUBSCRIPTIONS_DAILY_CAP = 25
    granted = []

    def ask():
        granted.append(transports.Quota().take(3))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 25
    assert transports.Quota().used() == 25


@pytest.mark.django_db
def test_past_the_daily_cap_readers_wait_for_tomorrow_then_go(
    use, provider, settings, django_capture_on_commit_callbacks, admin_client
):
    use("mailgun")
    settings.SUBSCRIPTIONS_DAILY_CAP = 5
    settings.SUBSCRIPTIONS_RECIPIENTS_PER_CALL = 2
    settings.SUBSCRIPTIONS_BATCH_SIZE = 4  # two batches, as two workers would take them
    group = [make_subscriber(f"r{i}@example.com") for i in range(8)]
    today = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
    with time_machine.travel(today, tick=True):
        mailing, _ = delivery.announce(Post())
        with django_capture_on_commit_callbacks(execute=False):
            delivery.fan_out(mailing.pk)
            delivery.send_mailing_batch(mailing.pk, 0, group[3].pk)
            delivery.send_mailing_batch(mailing.pk, group[4].pk, MAX_ID)
        assert sum(provider.recipients().values()) == 5
        waiting = Delivery.objects.filter(mailing=mailing, error=transports.QUOTA_WAIT)
        assert waiting.count() == 3
        tomorrow = datetime(2026, 12, 3, tzinfo=UTC)
        assert all(tomorrow <= d.next_attempt_at < tomorrow + timedelta(hours=1) for d in waiting)
        assert {d.attempts for d in waiting} == {0}
        page = admin_client.get(f"/admin/subscriptions/mailing/{mailing.pk}/change/")
        assert "3 waiting for tomorrow&#x27;s quota" in page.content.decode()
        listing = admin_client.get("/admin/subscriptions/mailing/")
        assert "3 waiting for tomorrow&#x27;s quota" in listing.content.decode()
        # Later today, nothing more goes.
        with django_capture_on_commit_callbacks(execute=False):
            delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
        assert sum(provider.recipients().values()) == 5
    with time_machine.travel(tomorrow + timedelta(hours=1, minutes=1), tick=True):
        with django_capture_on_commit_callbacks(execute=False):
            delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    assert provider.recipients() == Counter({r.email: 1 for r in group})
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE


@pytest.mark.django_db
def test_a_warm_up_schedule_grows_the_daily_cap_day_by_day(
    use, provider, settings, django_capture_on_commit_callbacks
):
    use("mailgun")
    settings.SUBSCRIPTIONS_WARMUP = "2, 4, 8"
    settings.SUBSCRIPTIONS_WARMUP_START = "2026-12-02"
    settings.SUBSCRIPTIONS_DAILY_CAP = None  # after the warm-up: no cap
    group = [make_subscriber(f"r{i}@example.com") for i in range(20)]
    sent_by_day = []
    mailing = None
    for day in range(4):
        with time_machine.travel(datetime(2026, 12, 2 + day, 2, 0, tzinfo=UTC), tick=True):
            if mailing is None:
                mailing, _ = delivery.announce(Post())
                with django_capture_on_commit_callbacks(execute=False):
                    delivery.fan_out(mailing.pk)
            before = sum(provider.recipients().values())
            with django_capture_on_commit_callbacks(execute=False):
                delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
                delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
            sent_by_day.append(sum(provider.recipients().values()) - before)
    assert sent_by_day == [2, 4, 8, 6]
    assert provider.recipients() == Counter({r.email: 1 for r in group})


def test_the_warm_up_day_is_read_from_the_schedule(settings):
    settings.SUBSCRIPTIONS_WARMUP = [100, 1000]
    settings.SUBSCRIPTIONS_WARMUP_START = "2026-12-02"
    settings.SUBSCRIPTIONS_DAILY_CAP = 50_000
    day = datetime(2026, 12, 2).date()
    assert [transports.daily_cap(day + timedelta(days=n)) for n in (-1, 0, 1, 2, 30)] == [
        100,
        100,
        1000,
        50_000,
        50_000,
    ]
    settings.SUBSCRIPTIONS_WARMUP = None
    assert transports.daily_cap(day) == 50_000


# A real worker, killed mid-mailing.


@worker
def test_a_worker_killed_mid_call_loses_nobody_and_repeats_at_most_one_call(
    celery_worker, provider, start_worker_process, settings
):
    """The worker dies while the provider takes its call (the provider
    accepted it; the worker never heard): those readers may get it twice —
    at most one call's worth — and nobody else is sent twice or lost."""
    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 15
    per_call = 50
    backend, anymail = anymail_settings(provider, "mailgun")
    env = {
        "EMAIL_BACKEND": backend,
        **{f"ANYMAIL_{k}": str(v) for k, v in anymail.items()},
        "SUBSCRIPTIONS_RECIPIENTS_PER_CALL": str(per_call),
    }
    group = readers(1000)
    killed = threading.Event()
    celery_worker.stop()  # only the worker about to die takes the first tasks
    try:
        doomed = start_worker_process("doomed", **env)

        def on_call(name, recipients):
            if provider.calls[name] == 5 and not killed.is_set():
                killed.set()
                doomed.stop(signal.SIGKILL)  # before the answer: the call went through

        provider.on_call = on_call
        mailing = subscriptions.announce(Post())
        wait_until(killed.is_set, timeout=60, message="the fifth call")
        assert Delivery.objects.filter(mailing=mailing, status=Delivery.Status.SENDING).exists()
        start_worker_process("replacement", **env)
        wait_for_done(mailing, timeout=180, sweep=True)
    finally:
        celery_worker.start()
    counts = provider.recipients()
    assert set(counts) == {r.email for r in group}
    assert sum(counts.values()) - len(group) <= per_call
    assert set(_status(mailing).values()) == {Delivery.Status.SENT}


def test_a_batch_smaller_than_the_providers_calls_is_reported(settings):
    from subscriptions import checks

    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.SUBSCRIPTIONS_BATCH_SIZE = 500
    (warning,) = checks.batch_size_fills_provider_calls(None)
    assert warning.id == "subscriptions.W002" and "1,000" in warning.msg
    settings.SUBSCRIPTIONS_BATCH_SIZE = 1000
    assert checks.batch_size_fills_provider_calls(None) == []
    settings.SUBSCRIPTIONS_RECIPIENTS_PER_CALL = 100
    settings.SUBSCRIPTIONS_BATCH_SIZE = 500
    assert checks.batch_size_fills_provider_calls(None) == []
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    assert checks.batch_size_fills_provider_calls(None) == []


# The Mailgun batch call is built with less work per reader (providers.py):
# plain addresses are not parsed again, the form goes as multipart. What it
# sends must be what anymail's own Mailgun payload says, field for field.

ADDRESSES = [
    "reader@example.com",
    "Ann.Lee@Example.COM",
    "Ann Lee 2 <Mixed.Case@Mail.Example.org>",
    "first.last+tag@mail.example.co.uk",
    "Ann Lee <ann@example.com>",
    "O'Brien <ob@example.com>",
    '"Lee, Ann" <lee@example.com>',
    "=?utf-8?q?Zo=C3=AB?= <zoe@example.com>",
    "Zoë <zoe2@example.com>",
    "user@xn--bcher-kva.example",
    "ünï@example.com",
    "a..b@example.com",
    "x@-bad-.example",
    "Lee, Ann <lee2@example.com>",  # two addresses: anymail refuses "Lee"
]


def _same(parsed):
    """Everything anymail reads of, or may ask, an EmailAddress."""
    from anymail.utils import EmailAddress

    def idna(domain):  # shows whether, and on what, it is called
        return f"idna({domain})"

    return [
        (
            isinstance(a, EmailAddress),
            a.display_name,
            a.addr_spec,
            a.address,
            a.username,
            a.domain,
            str(a),
            repr(a).partition("(")[2],
            a.format(),
            a.format(idna_encode=idna),
            a.format(use_rfc2047=True),
            a.format(use_rfc2047="force"),
            a.format_addr_spec(idna_encode=idna),
            a.format_display_name(use_quotes=True),
            a.as_dict(),
            a.uses_eai,
        )
        for a in parsed
    ]


def test_plain_addresses_become_the_email_addresses_anymail_parses():
    from anymail.exceptions import AnymailInvalidAddress
    from anymail.utils import parse_address_list

    from subscriptions.providers import parse_recipients

    good = ADDRESSES[:-3]
    assert _same(parse_recipients(good)) == _same(parse_address_list(good))
    for bad in [*ADDRESSES[-3:], "not an address", "a@b@c.example"]:
        try:
            expected = _same(parse_address_list([bad]))
        except AnymailInvalidAddress:
            with pytest.raises(AnymailInvalidAddress):
                parse_recipients([bad])
        else:
            assert _same(parse_recipients([bad])) == expected


_WORDS = ["Ann", "Lee", "Zoë", ",", "O'B", '"Q"', "(c)", ".", "a.b", "", "x@y", "<", ";"]
_NAME = st.lists(st.sampled_from(_WORDS), max_size=3).map(" ".join)
_LOCAL = st.sampled_from(["a", "a.b", "a..b", ".a", "a.", "a+b", "o'b", '"q"', "é", "a b", "a,b"])
_LABEL = st.sampled_from(["ex", "com", "-x", "x-", "x-y", "é", "b0", "", "a_b"])
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)


@given(
    st.one_of(
        st.text(alphabet="aZ09 .-_+'\"<>@,;:()[]\\é\r\n", max_size=40),
        st.builds("{}@{}".format, _LOCAL, _DOMAIN),
        st.builds("{} <{}@{}>".format, _NAME, _LOCAL, _DOMAIN),
    )
)
@hypothesis_settings(max_examples=500, deadline=None)
def test_any_string_is_parsed_as_anymail_parses_it(address):
    from anymail.exceptions import AnymailInvalidAddress
    from anymail.utils import parse_address_list

    from subscriptions.providers import parse_recipients

    try:
        expected = _same(parse_address_list([address], field="to"))
    except AnymailInvalidAddress:
        with pytest.raises(AnymailInvalidAddress):
            parse_recipients([address])
    else:
        assert _same(parse_recipients([address])) == expected


def test_the_mailgun_batch_form_is_anymails_field_for_field(settings):
    from anymail.backends.mailgun import MailgunPayload
    from django.core.mail import get_connection

    from subscriptions import providers
    from tests.providers import _form

    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {"MAILGUN_API_KEY": "key-test"}
    settings.DEFAULT_FROM_EMAIL = "News <news@example.com>"
    template = emails.MessageTemplate(
        "Ünïcode – a title",
        f"Hi\n{emails.placeholder('UNSUBSCRIBE')}\n",
        f"<p>Hé</p><a href='{emails.placeholder('PREFERENCES')}'>prefs</a>",
    )
    readers = []
    for i, name in enumerate(["", "Ann Lee", "Zoë", 'Lee, "Ann"']):
        reader = Subscriber(pk=i + 1, email=f"r{i}@example.com", name=name, key=f"k{i}")
        readers.append((reader, template.values(reader, emails.message_id("m1", reader.pk))))
    connection = get_connection()
    provider = providers.provider_of(connection)
    ours = provider.connection(connection)
    assert type(ours) is not type(connection)  # the lean backend is in use

    def message():
        metadata = {r.email: {"row": f"delivery:{r.pk}"} for r, _ in readers}
        return provider.prepare(template.for_readers(readers, provider.field, metadata))

    theirs = MailgunPayload(message(), connection.send_defaults, connection)
    payload = ours.build_message_payload(message(), ours.send_defaults)
    params = payload.get_request_params(ours.api_url)
    assert params["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    assert not params["files"]
    sent = _form(params["headers"]["Content-Type"], params["data"])
    expected = {
        name: [str(v) for v in (value if isinstance(value, list) else [value])]
        for name, value in theirs.serialize_data().items()
    }
    assert sent == expected
    assert len(sent["to"]) == 4 and "Ünïcode – a title" in sent["subject"]
    assert [a.addr_spec for a in payload.all_recipients] == [r.email for r, _ in readers]


def test_per_reader_values_are_copied_as_anymail_copies_them():
    from anymail.utils import force_non_lazy_dict
    from django.utils.functional import lazy

    from subscriptions.providers import per_recipient

    plain = {"a@example.com": {"UNSUBSCRIBE": "https://x/u/1", "NAME": "Zoë"}, "b@x.org": {}}
    copied = per_recipient(plain)
    assert copied == force_non_lazy_dict(plain)
    assert copied["a@example.com"] is not plain["a@example.com"]  # a copy, as anymail's
    lazy_text = lazy(lambda: "later", str)()
    for odd in (
        {"a@example.com": {"N": lazy_text}},
        {"a@example.com": {"N": 3}},
        {"a@example.com": {"N": {"deep": lazy_text}}},
    ):
        assert per_recipient(odd) == force_non_lazy_dict(odd)
        assert type(next(iter(per_recipient(odd)["a@example.com"].values()))) is not type(lazy_text)


def test_the_multipart_form_is_urllib3s_byte_for_byte():
    from urllib3 import encode_multipart_formdata

    from subscriptions.providers import multipart_form

    fields = [
        ("to", "reader@example.com"),
        ("to", "Zoë <zoe@example.com>"),
        ("h:Message-Id", "%recipient.h:Message-Id%"),
        ("recipient-variables", '{"reader@example.com": {"v:row": "delivery:1"}}'),
        ("text", "line\r\nanother\n"),
        ("raw", b"\xff\x00"),
        ('odd "name"', "quoted by urllib3"),
    ]
    for chosen in (fields, fields[:-1]):
        assert multipart_form(chosen, "b0undary") == encode_multipart_formdata(chosen, "b0undary")
    body, content_type = multipart_form(fields[:2])
    boundary = content_type.removeprefix("multipart/form-data; boundary=")
    assert body.startswith(f"--{boundary}\r\n".encode()) and len(boundary) == 32


@pytest.mark.parametrize("mailto", ["", "unsubscribe@example.com"])
def test_a_batch_messages_readers_and_headers_are_each_readers_own(settings, mailto):
    """for_readers() makes each reader's `to`, Message-ID and List-Unsubscribe
    in one pass: the same as formataddr() and list_unsubscribe() make them."""
    import email.utils

    settings.SUBSCRIPTIONS_UNSUBSCRIBE_MAILTO = mailto
    template = emails.MessageTemplate(
        "A title", f"{emails.placeholder('UNSUBSCRIBE')}\n", "<p></p>"
    )
    readers = []
    for i, name in enumerate(["", "Ann Lee", "Zoë", 'Lee, "Ann"', ""]):
        reader = Subscriber(pk=i + 1, email=f"r{i}@Example.com", name=name, key=f"k{i}")
        readers.append((reader, template.values(reader, emails.message_id("m1", reader.pk))))
    message = template.for_readers(readers, lambda name, html: f"%recipient.{name}%")
    assert message.to == [email.utils.formataddr((r.name, r.email)) for r, _ in readers]
    assert message.merge_headers == {
        r.email: {
            "Message-ID": f"<{values['MESSAGEID']}>",
            "List-Unsubscribe": emails.list_unsubscribe(values["ONECLICK"]),
        }
        for r, values in readers
    }
    assert message.merge_data == {r.email: {"UNSUBSCRIBE": v["UNSUBSCRIBE"]} for r, v in readers}
    # A non-ASCII address is refused as formataddr() refuses it.
    odd = Subscriber(pk=9, email="zoë@example.com", name="", key="k9")
    with pytest.raises(UnicodeEncodeError):
        email.utils.formataddr(("", odd.email))
    with pytest.raises(UnicodeEncodeError):
        template.for_readers([(odd, template.values(odd, "x@y"))], lambda name, html: name)


# Each reader's share of a batch call: their tokens, not their URLs; the
# message after the provider's substitution byte for byte what the
# per-reader path makes.


def _rendered(name, fields):
    """(To, Subject, {header: value}, text, html) of one recipient's message."""
    to, headers, text, html = _message(name, fields)
    subject = {"mailgun": lambda: fields["subject"][0], "postmark": lambda: fields["Subject"]}
    return to, subject.get(name, lambda: fields["subject"])(), headers, text, html


def _person(to):
    """(display name, address) of a To value, its encoded words decoded."""
    import email.header
    import email.utils

    display, address = email.utils.parseaddr(to)
    return str(email.header.make_header(email.header.decode_header(display))), address


@pytest.mark.django_db
@pytest.mark.parametrize("stats", [False, True], ids=["plain", "stats"])
@pytest.mark.parametrize("name", PROVIDERS)
def test_each_readers_batch_message_is_what_the_per_reader_path_makes(
    name, stats, use, provider, settings, django_capture_on_commit_callbacks
):
    from tests.subscriptions.test_stats import Post as LinkedPost

    use(name)
    settings.SUBSCRIPTIONS_UNSUBSCRIBE_MAILTO = "unsubscribe@example.com"
    settings.SUBSCRIPTIONS_STATS = stats
    settings.SUBSCRIPTIONS_STATS_PER_READER = stats
    group = [
        make_subscriber("plain@example.com"),
        make_subscriber("ann@example.com", name="Ann Lee"),
        make_subscriber("zoe@example.com", name="Zoë Ünïcode"),
        make_subscriber("quiet@example.com", name="Q", stats_opt_out=True),
    ]
    # Links carry the second they were signed in: one second for both paths.
    with time_machine.travel(datetime(2026, 12, 2, 9, 0, tzinfo=UTC), tick=False):
        mailing = _send(LinkedPost(), django_capture_on_commit_callbacks)
        build = emails.post(mailing)
        expected = {}
        for reader in group:
            one = SimpleNamespace(subscriber=reader, subscriber_id=reader.pk)
            expected[reader.email] = build(one, False)

    assert provider.calls[name] == 1
    assert provider.recipients() == Counter({r.email: 1 for r in group})
    by_reader = {recipients[0]: fields for _, recipients, fields in provider.accepted}
    for reader in group:
        want = expected[reader.email]
        to, subject, headers, text, html = _rendered(name, by_reader[reader.email])
        assert _person(to) == (reader.name, reader.email)
        assert subject == want.subject
        assert text == want.body
        assert html == want.alternatives[0][0]
        for header, value in want.extra_headers.items():
            assert headers[header.lower()] == value, header
        assert want.extra_headers["Message-ID"] == (
            f"<{emails.message_id(f'm{mailing.pk}', reader.pk)}>"
        )
        if stats:  # the pixel's message token is in both, as the per-reader path makes it
            assert emails.placeholder("STATS") not in html and "/subscribe/o/" in html
    if name == "mailgun":  # each reader's share of the call: tokens, not URLs
        (variables,) = provider.variables
        own = {"t", "p", "h:Message-Id", "h:List-Unsubscribe", "v:row"} | (
            {"STATS"} if stats else set()
        )
        assert {address: set(row) for address, row in variables.items()} == {
            r.email: own for r in group
        }


@pytest.mark.django_db
def test_each_reader_carries_only_their_tokens_in_a_batch_call(settings):
    """A batch call's per-reader values are the reader's tokens (the one
    token of unsubscribe and one-click, the preferences token), their
    Message-ID and List-Unsubscribe (whole header values) and the row: the
    site and paths of the links are written once, around the fields."""
    from tests.subscriptions.test_stats import Post as LinkedPost

    settings.SUBSCRIPTIONS_STATS = False
    mailing = subscriptions.announce(LinkedPost())
    build = emails.post(mailing)
    readers = []
    for i, name in enumerate(["", "Zoë"]):
        reader = make_subscriber(f"r{i}@example.com", name=name)
        one = SimpleNamespace(subscriber=reader, subscriber_id=reader.pk)
        readers.append((reader, build.values(one)))
    message = build.template.for_readers(
        readers, lambda name, html: f"%recipient.{name}%", links=build.links()
    )
    for reader, _ in readers:
        links = reader.email_links()
        data = message.merge_data[reader.email]
        assert set(data) == {"t", "p"}
        assert set(message.merge_headers[reader.email]) == {"Message-ID", "List-Unsubscribe"}
        assert links["UNSUBSCRIBE"].endswith(f"/{data['t']}/")
        assert links["PREFERENCES"].endswith(f"/{data['p']}/")
        assert not any(url in str(message.merge_data) for url in links.values())
    for part in (message.body, message.alternatives[0][0]):
        assert f"{tokens.around('unsubscribe')[0]}%recipient.t%/" in part
        assert f"{tokens.around('preferences')[0]}%recipient.p%/" in part
