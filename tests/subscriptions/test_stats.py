"""Engagement stats: off by default and then invisible; when on, a pixel and
signed click links that lead only to the mailing's own addresses, machines
told from people, Apple's MPP counted apart, per-reader rows only when the
site asks and the reader does not opt out, and admin pages in a constant
number of queries."""

import re
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace

import pytest
import time_machine
from django.core import signing
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import subscriptions
from subscriptions import emails, stats, tokens
from subscriptions.models import (
    Delivery,
    Mailing,
    StatCount,
    StatEvent,
    StatKind,
    Subscriber,
)
from tests.factories import make_subscriber, signed_key

pytestmark = pytest.mark.django_db

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
APPLE_MAIL = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
PERSON_IP = "203.0.113.7"
_ids = iter(range(1, 10**6))


@dataclass
class Post:
    title: str = "Sessions visits El Paso"
    pk: int = field(default_factory=lambda: next(_ids))
    published_at = None

    def get_absolute_url(self):
        return f"/posts/{self.pk}/"

    def email_summary(self):
        return "The former attorney general spoke at the border."

    def topic_links(self):
        return [
            ("El Paso", "http://127.0.0.1:8000/places/el-paso/?from=email&x=1"),
            ("Jeff Sessions", "http://127.0.0.1:8000/people/jeff-sessions/"),
        ]


@pytest.fixture
def stats_on(settings):
    settings.SUBSCRIPTIONS_STATS = True
    settings.SUBSCRIPTIONS_STATS_PER_READER = False
    settings.SUBSCRIPTIONS_STATS_RATELIMIT = None
    return settings


@pytest.fixture
def per_reader(stats_on):
    stats_on.SUBSCRIPTIONS_STATS_PER_READER = True
    return stats_on


def announce():
    mailing = subscriptions.announce(Post())
    return mailing


def copy_for(mailing, subscriber):
    """The reader's message as a provider backend would get it (text, html)."""
    delivery = SimpleNamespace(subscriber=subscriber, subscriber_id=subscriber.pk)
    message = emails.post(mailing)(delivery, False)
    return message.body, message.alternatives[0][0]


def tracked_links(html):
    return [
        u.replace("&amp;", "&")
        for u in re.findall(r'href="(http://[^"]*/subscribe/c/[^"]+)"', html)
    ]


def pixel(html):
    return re.search(r'<img src="(http://[^"]*/subscribe/o/[^"]+)"', html).group(1)


def path(url):
    return "/" + url.split("/", 3)[3]


def counts():
    return {
        kind: sum(StatCount.objects.filter(kind=kind).values_list("count", flat=True))
        for kind in StatKind.values
    }


def only(**expected):
    """counts() with these kinds (StatKind value with _ for -) and zeros elsewhere."""
    return {kind: expected.get(kind.replace("-", "_"), 0) for kind in StatKind.values}


def hit(client, url, method="get", agent=BROWSER, ip=PERSON_IP, **extra):
    return getattr(client, method)(path(url), HTTP_USER_AGENT=agent, REMOTE_ADDR=ip, **extra)


@pytest.fixture
def sent(stats_on):
    """(mailing, reader, text, html): a reader's tracked copy, sent now."""
    mailing = announce()
    reader = make_subscriber()
    text, html = copy_for(mailing, reader)
    return mailing, reader, text, html


def later(seconds=60):
    return time_machine.travel(timezone.now() + timedelta(seconds=seconds), tick=False)


# Off by default.


def test_stats_are_off_by_default_and_then_the_email_is_exactly_as_before(settings, client):
    assert not settings.SUBSCRIPTIONS_STATS
    mailing = announce()
    reader = make_subscriber()
    # One moment: the reader's signed links carry the time they were made.
    with time_machine.travel(timezone.now(), tick=False):
        text, html = copy_for(mailing, reader)
        untouched = emails.MessageTemplate(mailing.subject, mailing.text, mailing.html).for_reader(
            reader, emails.message_id(f"m{mailing.pk}", reader.pk), False
        )
    assert (text, html) == (untouched.body, untouched.alternatives[0][0])
    assert "/subscribe/o/" not in html and "/subscribe/c/" not in html + text
    assert f'href="{mailing.url}"' in html
    raw = emails.post(mailing)(SimpleNamespace(subscriber=reader, subscriber_id=reader.pk), True)
    assert b"/subscribe/o/" not in raw.raw and b"/subscribe/c/" not in raw.raw
    # A tracked link from when stats were on still leads where it did, and
    # counts nothing.
    settings.SUBSCRIPTIONS_STATS = True
    _, tracked = copy_for(mailing, reader)
    settings.SUBSCRIPTIONS_STATS = False
    with later():
        response = hit(client, tracked_links(tracked)[0])
        assert hit(client, pixel(tracked)).status_code == 200
    assert response.status_code == 302 and response["Location"] == mailing.url
    assert not StatCount.objects.exists() and not StatEvent.objects.exists()


def test_the_readers_copy_is_tracked_but_the_stored_snapshot_is_not(sent):
    mailing, reader, text, html = sent
    assert "/subscribe/" not in mailing.html and "/subscribe/" not in mailing.text
    hrefs = re.findall(r'href="([^"]+)"', html)
    # Every link of the post goes through the redirect; the reader's own
    # preferences and unsubscribe links never do.
    assert {h for h in hrefs if "/subscribe/c/" not in h} == {
        reader.preferences_url(),
        reader.unsubscribe_url(),
    }
    assert len(set(tracked_links(html))) == len(mailing.links) == 4
    assert pixel(html)
    assert "/subscribe/c/" in text and "http://127.0.0.1:8000/people/jeff-sessions/" not in text
    assert reader.unsubscribe_url() in text


def test_a_real_batch_sends_the_tracked_copy(
    stats_on, smtp_server, django_capture_on_commit_callbacks
):
    from subscriptions import delivery
    from subscriptions.models import MAX_ID

    reader = make_subscriber("reader@example.com")
    with django_capture_on_commit_callbacks(execute=False):
        mailing = announce()
        delivery.fan_out(mailing.pk)
        assert delivery.send_mailing_batch(mailing.pk, 0, MAX_ID) == 1
    (message,) = smtp_server.messages
    body = "".join(part.get_content() for part in message.walk() if not part.is_multipart())
    assert "/subscribe/o/" in body and "/subscribe/c/" in body
    assert emails.placeholder("STATS") not in body
    assert signed_key(body, "unsubscribe", tokens.UNSUBSCRIBE) == reader.key


# People and machines.


def test_a_persons_click_leads_to_the_address_and_counts_as_a_persons(sent, client):
    mailing, _, _, html = sent
    link = tracked_links(html)[0]
    with later():
        response = hit(client, link)
    assert response.status_code == 302
    assert response["Location"] == mailing.links[0]
    assert response["Referrer-Policy"] == "no-referrer"
    assert counts() == only(click=1)
    assert StatCount.objects.get().link == 0


def test_a_head_request_is_a_machines(sent, client):
    _, _, _, html = sent
    with later():
        assert hit(client, tracked_links(html)[0], "head").status_code == 302
        assert hit(client, pixel(html), "head").status_code == 200
    assert counts() == only(click_machine=1, open_machine=1)


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (compatible; Barracuda Sentinel)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
        "python-requests/2.32.3",
        "",
    ],
)
def test_a_known_scanner_or_previewer_is_a_machine(sent, client, agent):
    _, _, _, html = sent
    with later():
        assert hit(client, tracked_links(html)[1], agent=agent).status_code == 302
        assert hit(client, pixel(html), agent=agent).status_code == 200
    assert counts() == only(click_machine=1, open_machine=1)


def test_a_click_seconds_after_sending_is_a_machines(sent, client):
    _, _, _, html = sent
    with later(seconds=2):
        hit(client, tracked_links(html)[0])
    with later(seconds=11):
        hit(client, tracked_links(html)[0])
    assert counts() == only(click_machine=1, click=1)


def test_clicking_every_link_at_once_is_a_machine_even_with_a_browsers_agent(sent, client):
    mailing, _, _, html = sent
    links = list(dict.fromkeys(tracked_links(html)))
    start = timezone.now() + timedelta(minutes=5)
    for i, link in enumerate(links[:3]):
        with time_machine.travel(start + timedelta(seconds=0.6 * i), tick=False):
            assert hit(client, link).status_code == 302
    # The first two looked like a person's until the third came.
    assert counts() == only(click_machine=3)


def test_a_person_clicking_two_links_a_minute_apart_is_a_person(sent, client):
    _, _, _, html = sent
    links = list(dict.fromkeys(tracked_links(html)))
    with later(60):
        hit(client, links[0])
    with later(120):
        hit(client, links[1])
    with later(180):
        hit(client, links[2])
    assert counts() == only(click=3)


def test_the_full_scanner_pattern_is_all_machine(sent, client):
    """HEAD, then every link within 2 s, then a scanner's user agent."""
    _, _, _, html = sent
    links = list(dict.fromkeys(tracked_links(html)))
    with later(1):
        for link in links:
            hit(client, link, "head")
    with later(90):
        for link in links:
            hit(client, link, agent=BROWSER, ip="198.51.100.9")
    with later(95):
        hit(client, links[0], agent="Mozilla/5.0 (compatible; Mimecast URL Protect)")
    assert counts() == only(click_machine=2 * len(links) + 1)


def test_apple_mail_privacy_protection_is_counted_apart(sent, client):
    _, _, _, html = sent
    with later(30):
        hit(client, pixel(html), agent="Mozilla/5.0", ip="198.51.100.1")
        hit(client, pixel(html), agent=APPLE_MAIL, ip="17.58.63.10")
    with later(3600):
        hit(client, pixel(html), agent=BROWSER)
        hit(
            client,
            pixel(html),
            agent="Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        )
    assert counts() == only(open_mpp=2, open=2)


def test_an_open_within_seconds_of_sending_is_a_machines(sent, client):
    _, _, _, html = sent
    with later(1):
        response = hit(client, pixel(html))
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    assert response.content.startswith(b"GIF89a")
    assert counts() == only(open_machine=1)


# Links that lead nowhere else.


def test_a_link_to_an_address_not_in_the_mailing_is_refused(sent, client):
    mailing, _, _, html = sent
    message = tracked_links(html)[0].rstrip("/").rsplit("/", 1)[1]
    other = Mailing.objects.create(
        post_key="x:1",
        title="Other",
        url="http://127.0.0.1:8000/o/",
        subject="s",
        text="t",
        html="h",
        links=[],
    )
    for index, owner in [
        (len(mailing.links), mailing.pk),
        (-1, mailing.pk),
        (0, other.pk),
        (0, 10**9),
    ]:
        link = stats.link_token(owner, index)
        with later():
            response = client.get(f"/subscribe/c/{link}/{message}/", HTTP_USER_AGENT=BROWSER)
        assert response.status_code == 404, (owner, index)
        assert "Location" not in response
    # A target in the query string is ignored: it goes where the link says.
    with later():
        response = client.get(path(tracked_links(html)[0]) + "?url=https://evil.example/")
    assert response["Location"] == mailing.links[0]
    assert not StatCount.objects.filter(link__gte=len(mailing.links)).exists()


def test_a_tampered_signature_is_refused_and_counts_nothing(sent, client):
    _, _, _, html = sent
    link_url, pixel_url = tracked_links(html)[0], pixel(html)
    _, _, _, _, _, link, message, _ = link_url.split("/")
    _, _, _, _, _, mailing_token, _, _ = pixel_url.split("/")

    def flip(token):
        last = token[-1]
        return token[:-1] + ("A" if last != "A" else "B")

    mailing_id, index = stats.load_link(link)
    forged_index = signing.Signer(salt="wrong").sign(f"{mailing_id}.{index + 1}")
    with later():
        for url in [
            f"/subscribe/c/{flip(link)}/{message}/",
            f"/subscribe/c/{link}/{flip(message)}/",
            f"/subscribe/c/{forged_index}/{message}/",
            f"/subscribe/c/{message}/{message}/",  # a token of another purpose
            f"/subscribe/o/{flip(mailing_token)}/{message}/",
            f"/subscribe/o/{mailing_token}/{flip(message)}/",
            f"/subscribe/o/{link}/{message}/",
        ]:
            response = client.get(url, HTTP_USER_AGENT=BROWSER)
            assert response.status_code == 404, url
            assert "Location" not in response
    assert not StatCount.objects.exists()


def test_a_flood_from_one_address_still_works_but_is_not_counted(sent, client):
    sent_settings = sent
    from django.conf import settings

    settings.SUBSCRIPTIONS_STATS_RATELIMIT = "2/m"
    _, _, _, html = sent_settings
    with later():
        for _ in range(4):
            assert hit(client, pixel(html), ip="192.0.2.50").status_code == 200
    assert counts() == only(open=2)


def test_a_flood_changing_a_forwarded_ip_that_is_no_ip_is_not_counted_either(sent, client):
    """Reached without its proxy, anyone can send RATELIMIT_IP_META_KEY's
    header: garbage in it is one client for the limit, whatever it says."""
    from django.conf import settings

    settings.RATELIMIT_IP_META_KEY = "HTTP_X_REAL_IP"
    settings.SUBSCRIPTIONS_STATS_RATELIMIT = "2/m"
    _, _, _, html = sent
    with later():
        for i in range(4):
            response = hit(client, pixel(html), HTTP_X_REAL_IP=f"not-an-ip-{i}")
            assert response.status_code == 200
    assert counts() == only(open=2)


# Readers: aggregate by default, individually only when asked and not opted out.


def test_aggregate_mode_stores_no_reader(sent, client):
    mailing, reader, _, html = sent
    key, _ = stats.load_message(tracked_links(html)[0].rstrip("/").rsplit("/", 1)[1])
    assert key is None
    assert reader.key not in html
    with later():
        hit(client, pixel(html))
        hit(client, tracked_links(html)[0])
    assert counts() == only(open=1, click=1)
    assert not StatEvent.objects.exists()
    # The counters have nowhere to put a reader.
    assert not any(
        getattr(f, "related_model", None) is Subscriber for f in StatCount._meta.get_fields()
    )


def test_per_reader_mode_records_each_readers_events(per_reader, client):
    mailing = announce()
    reader = make_subscriber()
    _, html = copy_for(mailing, reader)
    with later():
        hit(client, pixel(html))
        hit(client, list(dict.fromkeys(tracked_links(html)))[2])
    events = list(StatEvent.objects.values_list("subscriber", "kind", "link"))
    assert events == [(reader.pk, "open", -1), (reader.pk, "click", 2)]
    assert counts() == only(open=1, click=1)
    assert reader.export_data()["opens_and_clicks"][1]["link"] == mailing.links[2]


def test_a_reader_who_opted_out_is_not_counted_individually(per_reader, client):
    mailing = announce()
    reader = make_subscriber(stats_opt_out=True)
    _, html = copy_for(mailing, reader)
    assert reader.key not in html
    assert stats.load_message(path(pixel(html)).split("/")[4])[0] is None
    # One who opts out after the email went out is not counted as theirs either.
    changed_mind = make_subscriber()
    _, their_html = copy_for(mailing, changed_mind)
    assert stats.load_message(path(pixel(their_html)).split("/")[4])[0] == changed_mind.key
    Subscriber.objects.filter(pk=changed_mind.pk).update(stats_opt_out=True)
    with later():
        for page in (html, their_html):
            hit(client, pixel(page))
            hit(client, tracked_links(page)[0])
    assert not StatEvent.objects.exists()
    assert counts() == only(open=2, click=2)


def test_erasing_a_reader_deletes_their_events_and_keeps_the_totals(per_reader, client):
    mailing = announce()
    reader = make_subscriber()
    _, html = copy_for(mailing, reader)
    with later():
        hit(client, tracked_links(html)[0])
    reader.erase()
    assert not StatEvent.objects.exists()
    assert counts() == only(click=1)


def test_the_preferences_page_offers_the_opt_out_only_with_per_reader_stats(settings, client):
    reader = make_subscriber(name="Ann")
    url = reader.preferences_path()
    assert b"stats_opt_out" not in client.get(url).content
    settings.SUBSCRIPTIONS_STATS = True
    assert b"stats_opt_out" not in client.get(url).content  # aggregate: nothing to opt out of
    settings.SUBSCRIPTIONS_STATS_PER_READER = True
    assert b"stats_opt_out" in client.get(url).content
    response = client.post(url, {"name": "Ann", "frequency": "instant", "stats_opt_out": "on"})
    assert response.status_code == 200
    reader.refresh_from_db()
    assert reader.stats_opt_out
    # Saving the page where the question is not asked leaves the answer alone.
    settings.SUBSCRIPTIONS_STATS_PER_READER = False
    client.post(url, {"name": "Ann B", "frequency": "daily"})
    reader.refresh_from_db()
    assert reader.stats_opt_out and reader.name == "Ann B"


# What the admin shows.


def test_unsubscribes_count_for_the_last_mailing_the_reader_was_sent():
    first, second = announce(), announce()
    now = timezone.now()
    leaves, stays, left_after_second = make_subscriber(), make_subscriber(), make_subscriber()
    for reader in (leaves, stays, left_after_second):
        Delivery.objects.create(
            mailing=first, subscriber=reader, status="sent", sent_at=now - timedelta(hours=5)
        )
    Delivery.objects.create(
        mailing=second,
        subscriber=left_after_second,
        status="sent",
        sent_at=now - timedelta(hours=2),
    )
    Subscriber.objects.filter(pk=leaves.pk).update(
        status="unsubscribed", unsubscribed_at=now - timedelta(hours=4)
    )
    Subscriber.objects.filter(pk=left_after_second.pk).update(
        status="unsubscribed", unsubscribed_at=now - timedelta(hours=1)
    )
    assert stats.unsubscribes([first.pk, second.pk]) == {first.pk: 1, second.pk: 1}


def _engagement(n_mailings, n_events):
    mailings = [announce() for _ in range(n_mailings)]
    for mailing in mailings:
        for i in range(n_events):
            StatCount.objects.add(
                mailing.pk,
                StatKind.CLICK,
                i % len(mailing.links),
                timezone.now() - timedelta(hours=i % 48),
            )
            StatCount.objects.add(
                mailing.pk, StatKind.OPEN, -1, timezone.now() - timedelta(hours=i % 48)
            )
            StatEvent.objects.create(
                mailing=mailing, subscriber=make_subscriber(), kind=StatKind.OPEN
            )
    return mailings


# The session, the user, the page of mailings, then stats.summaries: delivered,
# counters, unsubscribes, distinct readers.
LIST_QUERIES = 8
# The session, the user, the mailing, summaries (4), the first send, top links, the chart.
PAGE_QUERIES = 10


@pytest.mark.parametrize("size", [1, 12])
def test_the_engagement_pages_take_a_constant_number_of_queries(
    admin_client, django_assert_num_queries, per_reader, size
):
    mailings = _engagement(size, size)
    with django_assert_num_queries(LIST_QUERIES):
        response = admin_client.get("/admin/subscriptions/engagement/")
    assert response.status_code == 200
    assert (
        response.content.count(b'class="action-select"') + response.content.count(b"field-title")
        >= size
    )
    with django_assert_num_queries(PAGE_QUERIES):
        response = admin_client.get(f"/admin/subscriptions/engagement/{mailings[0].pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<svg" in page and "<polyline" in page
    assert f"<strong>{size}</strong><span>People&#x27;s clicks</span>" in page
    assert mailings[0].links[0] in page


def test_the_mailing_chart_puts_each_hour_in_its_place(stats_on):
    mailing = announce()
    start = timezone.now().replace(minute=0, second=0, microsecond=0)
    StatCount.objects.add(
        mailing.pk, StatKind.OPEN, -1, start + timedelta(hours=3, minutes=10), n=5
    )
    StatCount.objects.add(mailing.pk, StatKind.CLICK_MACHINE, 0, start + timedelta(minutes=1), n=2)
    StatCount.objects.add(mailing.pk, StatKind.OPEN, -1, start + timedelta(hours=49), n=7)
    hours = stats.first_hours(mailing, start)
    assert hours["open"][3] == 5 and sum(hours["open"]) == 5
    assert hours["click-machine"][0] == 2
    chart = stats.mailing_chart(mailing, start)
    assert [line["total"] for line in chart["lines"]] == [5, 0, 0, 2]


def test_subscribers_over_time(client):
    today = timezone.localdate()
    now = timezone.now()
    for days_ago in (10, 10, 5, 1):
        make_subscriber(confirmed_at=now - timedelta(days=days_ago))
    make_subscriber(
        status="unsubscribed",
        confirmed_at=now - timedelta(days=9),
        unsubscribed_at=now - timedelta(days=3),
    )
    make_subscriber(
        status="suppressed",
        confirmed_at=now - timedelta(days=9),
        suppressed_at=now - timedelta(days=2),
    )
    make_subscriber(status="pending")
    dates, series = stats.subscriber_growth(days=12, today=today)
    assert dates[-1] == today
    assert series["confirmed"] == [0, 2, 4, 4, 4, 4, 5, 5, 4, 3, 4, 4]
    assert series["unsubscribed"][-4:] == [1, 1, 1, 1] and series["unsubscribed"][7] == 0
    assert series["suppressed"][-3:] == [1, 1, 1] and series["suppressed"][8] == 0


def test_suppressing_records_when(stats_on):
    reader = make_subscriber()
    reader.suppress()
    other = make_subscriber()
    Subscriber.objects.suppress([other.pk])
    assert Subscriber.objects.filter(suppressed_at__isnull=False).count() == 2


def test_the_subscriber_list_draws_the_growth_chart(admin_client):
    make_subscriber(confirmed_at=timezone.now() - timedelta(days=3))
    page = admin_client.get("/admin/subscriptions/subscriber/").content.decode()
    assert "Subscribers over the last 90 days" in page
    assert page.count("<polyline") == 3


# Strangers.

FUZZ = hypothesis_settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SEGMENT = st.one_of(
    st.text(
        alphabet=st.characters(blacklist_characters="/?#%", blacklist_categories=["Cs"]),
        min_size=1,
        max_size=60,
    ),
    st.from_regex(r"[0-9]{1,20}\.-?[0-9]{1,20}:[A-Za-z0-9_-]{0,43}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{0,30}\.[0-9]{0,12}:[A-Za-z0-9_-]{0,43}", fullmatch=True),
)


@FUZZ
@given(
    kind=st.sampled_from(["o", "c"]),
    first=SEGMENT,
    second=SEGMENT,
    method=st.sampled_from(["get", "head", "post", "put", "delete", "options"]),
    agent=st.text(max_size=200),
    query=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3),
)
def test_the_pixel_and_redirect_never_fail_on_garbage(
    client, stats_on, kind, first, second, method, agent, query
):
    from urllib.parse import quote

    url = f"/subscribe/{kind}/{quote(first, safe='')}/{quote(second, safe='')}/"
    agent = "".join(c for c in agent if 32 <= ord(c) < 127)
    response = getattr(client, method)(
        url, query if method == "get" else None, HTTP_USER_AGENT=agent
    )
    assert response.status_code in (404, 405)
    assert not StatCount.objects.exists()


@FUZZ
@given(
    index=st.integers(min_value=-(2**40), max_value=2**40),
    sent=st.integers(min_value=-(2**40), max_value=2**40),
    key=st.from_regex(r"[A-Za-z0-9_-]{0,30}", fullmatch=True),
)
def test_validly_signed_nonsense_never_fails(client, stats_on, index, sent, key):
    """Tokens we might have signed but never made: any index, any time, any key."""
    mailing = Mailing.objects.first() or announce()
    message = stats.message_token(key, sent)
    link = stats.link_token(mailing.pk, index)
    response = client.get(f"/subscribe/c/{link}/{message}/", HTTP_USER_AGENT=BROWSER)
    if 0 <= index < len(mailing.links):
        assert response.status_code == 302 and response["Location"] == mailing.links[index]
    else:
        assert response.status_code == 404
    response = client.get(f"/subscribe/o/{stats.open_token(mailing.pk)}/{message}/")
    assert response.status_code == 200


def test_only_staff_who_may_see_mailings_see_their_engagement(client, stats_on):
    from django.contrib.auth.models import Permission

    from tests.factories import make_staff

    mailing = announce()
    author = make_staff("author", role="Authors")
    client.force_login(author)
    assert client.get("/admin/subscriptions/engagement/").status_code == 403
    assert client.get(f"/admin/subscriptions/engagement/{mailing.pk}/change/").status_code == 403
    author.user_permissions.add(Permission.objects.get(codename="view_mailing"))
    client.force_login(author)
    assert client.get(f"/admin/subscriptions/engagement/{mailing.pk}/change/").status_code == 200


def test_a_charts_top_leaves_little_empty_room():
    tops = {v: stats._nice_max(v) for v in (0, 7, 37, 101, 527, 1000)}
    assert tops == {0: 4, 7: 8, 37: 40, 101: 150, 527: 600, 1000: 1000}
