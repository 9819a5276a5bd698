"""The public newsletter archive (/newsletter/), its feeds, and each email's
web version (/email/<key>/): what was sent, never with a reader's links."""

import uuid
from datetime import timedelta
from urllib.parse import quote

import feedparser
import hypothesis
import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import strategies as st

from subscriptions import delivery, emails, tokens
from subscriptions.models import MAX_ID, Digest, Mailing
from tests.factories import make_subscriber, signed_key
from tests.subscriptions.test_delivery import Post

pytestmark = pytest.mark.django_db

MARK = emails.placeholder("")[: len(emails.placeholder("")) // 2]


class EmailOnlyPost(Post):
    email_only = True


def sent(post, status=Mailing.Status.DONE, when=None):
    """A mailing of `post` that went out (its fan-out never queued)."""
    mailing, _ = delivery.announce(post)
    when = when or mailing.created_at
    Mailing.objects.filter(pk=mailing.pk).update(status=status, created_at=when, send_at=when)
    mailing.refresh_from_db()
    return mailing


def reader_traces(subscriber):
    """What would identify a reader on a page: their links and their key."""
    return [
        MARK,
        subscriber.key,
        subscriber.unsubscribe_url(),
        subscriber.preferences_url(),
        subscriber.one_click_url(),
        "/subscribe/unsubscribe/",
        "/subscribe/preferences/",
        "/subscribe/one-click/",
        ">Unsubscribe<",
        "Change what you get",
    ]


def test_the_archive_and_the_web_version_never_show_a_readers_links(client):
    reader = make_subscriber("ann@example.com")
    post = Post(title="Sessions visits El Paso", topics=["el-paso"])
    mailing = sent(post)
    # The snapshot holds the reader's links as placeholders...
    assert emails.placeholder("UNSUBSCRIBE") in mailing.html
    assert emails.placeholder("PREFERENCES") in mailing.text
    # ...which a reader's message fills in with their own.
    message = emails.post(mailing)(
        type("D", (), {"subscriber": reader, "subscriber_id": reader.pk})(), False
    )
    assert signed_key(message.body, "unsubscribe", tokens.UNSUBSCRIBE) == reader.key

    for path in ("/newsletter/", mailing.get_absolute_url()):
        html = client.get(path).content.decode()
        for trace in reader_traces(reader):
            assert trace not in html, (path, trace)
    page = client.get(mailing.get_absolute_url()).content.decode()
    assert "Sessions visits El Paso" in page
    assert "The former attorney general spoke at the border." in page
    assert f'href="{settings.SITE_URL}/posts/{post.pk}/"' in page  # "Read on Newsroom"
    assert f"{settings.SITE_URL}/t/el-paso/" in page  # the post's own links stay
    assert "View in browser" not in page


def test_links_an_override_left_unmarked_lose_the_readers_address(client):
    mailing = sent(Post(title="Overridden"))
    footer = (
        f'<p>Extra: <a href="{emails.placeholder("UNSUBSCRIBE")}">Leave us</a>'
        f'<img src="https://stats.example/open/{emails.placeholder("OPEN")}.gif" alt="">'
        f" reader {emails.placeholder('TO')}</p></body>"
    )
    Mailing.objects.filter(pk=mailing.pk).update(html=mailing.html.replace("</body>", footer))
    page = client.get(mailing.get_absolute_url()).content.decode()
    assert "Leave us" in page
    assert MARK not in page and "stats.example" not in page


def test_the_archive_lists_what_went_out_newest_first(client):
    now = timezone.now()
    old = sent(Post(title="Old news"), when=now - timedelta(days=3))
    new = sent(Post(title="New news"), status=Mailing.Status.SENDING, when=now - timedelta(days=1))
    waiting = sent(Post(title="Still in its undo window"), status=Mailing.Status.QUEUED)
    withdrawn = sent(Post(title="Taken down"), status=Mailing.Status.PAUSED)
    html = client.get("/newsletter/").content.decode()
    assert html.index("New news") < html.index("Old news")
    assert "Still in its undo window" not in html and "Taken down" not in html
    for mailing in (old, new):
        assert client.get(mailing.get_absolute_url()).status_code == 200
    for mailing in (waiting, withdrawn):
        assert client.get(mailing.get_absolute_url()).status_code == 404


def test_the_archive_dates_and_orders_emails_by_when_they_went_out(client):
    """A send scheduled for later is written before one sent at once but
    goes out after it: the archive, the feeds and the web version say when
    each went out."""
    now = timezone.now()
    scheduled = sent(Post(title="Written first, sent later"), when=now - timedelta(days=3))
    Mailing.objects.filter(pk=scheduled.pk).update(send_at=now - timedelta(days=1))
    sent(Post(title="Written and sent in between"), when=now - timedelta(days=2))
    html = client.get("/newsletter/").content.decode()
    assert html.index("Written first, sent later") < html.index("Written and sent in between")
    went_out = (now - timedelta(days=1)).isoformat(timespec="seconds")[:19]
    assert f'datetime="{went_out}' in html
    feed = feedparser.parse(client.get("/newsletter/feed/").content)
    assert feed.entries[0].title == "Written first, sent later"
    published = feed.entries[0].published_parsed
    assert published[:3] == (now - timedelta(days=1)).utctimetuple()[:3]
    page = client.get(scheduled.get_absolute_url()).content.decode()
    assert (now - timedelta(days=1)).strftime("%-d %B %Y") in page


def test_mailings_sent_before_send_times_existed_are_dated_when_written():
    import importlib

    from django.apps import apps

    migration = importlib.import_module("subscriptions.migrations.0008_archive_by_send_time")
    now = timezone.now()
    old = sent(Post(title="Old"), when=now - timedelta(days=30))
    # What 0005 left: the migration's time as the send time, after it finished.
    Mailing.objects.filter(pk=old.pk).update(
        send_at=now, finished_at=now - timedelta(days=30) + timedelta(minutes=2)
    )
    recent = sent(Post(title="Recent"), when=now - timedelta(hours=1))
    Mailing.objects.filter(pk=recent.pk).update(finished_at=now)
    migration.date_old_mailings_by_their_writing(apps, None)
    old.refresh_from_db()
    recent.refresh_from_db()
    assert old.send_at == old.created_at
    assert recent.send_at == now - timedelta(hours=1)


def test_a_stranger_cannot_guess_or_break_a_web_version(client):
    mailing = sent(Post())
    assert client.get(f"/email/{uuid.uuid4()}/").status_code == 404
    assert client.get(f"/email/{mailing.pk}/").status_code == 404
    assert client.get("/email/not-a-key/").status_code == 404
    assert client.post(mailing.get_absolute_url()).status_code == 405
    assert client.get("/newsletter/?page=abc").status_code == 200
    assert client.get("/newsletter/?page=99999999999999999999").status_code == 200


def test_the_archive_paginates(client):
    now = timezone.now()
    for i in range(23):
        sent(Post(title=f"Issue {i:02d}"), when=now - timedelta(hours=100 - i))
    first = client.get("/newsletter/").content.decode()
    second = client.get("/newsletter/?page=2").content.decode()
    assert first.count("<h2>") == 20 and second.count("<h2>") == 3
    assert "Issue 22" in first and "Issue 03" in first and "Issue 02" not in first
    assert "Issue 02" in second and "Issue 00" in second
    assert 'rel="next" href="?page=2"' in first and 'rel="prev" href="?page=1"' in second


@pytest.mark.parametrize("path", ["/newsletter/", "/newsletter/feed/", "/newsletter/feed/atom/"])
def test_the_archive_and_its_feeds_take_the_same_queries_for_any_number_of_mailings(client, path):
    counts = []
    for n in (2, 12):
        for i in range(n):
            sent(Post(title=f"Post {n}-{i}"))
        with CaptureQueriesContext(connection) as queries:
            assert client.get(path).status_code == 200
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1] <= 2
    # Listing never loads the emails' bodies.
    assert all('"html"' not in q["sql"] for q in queries.captured_queries)


@pytest.mark.parametrize("path", ["/newsletter/feed/", "/newsletter/feed/atom/"])
def test_the_archive_feeds_validate_and_link_the_web_versions(client, path):
    mailings = [sent(Post(title=f"Issue {i} & more")) for i in range(3)]
    sent(Post(title="Not yet"), status=Mailing.Status.QUEUED)
    response = client.get(path)
    feed = feedparser.parse(response.content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.feed.title == f"{settings.SITE_NAME} newsletter"
    assert [entry.title for entry in feed.entries] == [m.title for m in reversed(mailings)]
    assert {entry.link for entry in feed.entries} == {
        f"{settings.SITE_URL}{m.get_absolute_url()}" for m in mailings
    }
    assert all(entry.summary == mailings[0].summary for entry in feed.entries)


def text_and_html(mailing, reader):
    message = emails.post(mailing)(
        type("D", (), {"subscriber": reader, "subscriber_id": reader.pk})(), False
    )
    return message.body, message.alternatives[0][0]


def test_every_post_email_says_view_in_browser():
    reader = make_subscriber()
    post = Post()
    mailing = sent(post)
    text, html = text_and_html(mailing, reader)
    url = f"{settings.SITE_URL}/posts/{post.pk}/"
    assert mailing.url == url
    assert text.startswith("View in browser [1]\n") and f"\n[1] {url}\n" in text
    assert f'<a href="{url}"' in html and ">View in browser</a>" in html


def test_an_email_only_post_links_its_unguessable_web_version(client):
    reader = make_subscriber()
    mailing = sent(EmailOnlyPost(title="Only for subscribers"))
    web = f"{settings.SITE_URL}/email/{mailing.web_key}/"
    assert mailing.url == web
    text, html = text_and_html(mailing, reader)
    assert f"\n[1] {web}\n" in text and f'<a href="{web}"' in html
    assert "/posts/" not in text + html
    assert client.get(f"/email/{mailing.web_key}/").status_code == 200


def test_digests_link_each_posts_web_version(smtp_server, django_capture_on_commit_callbacks):
    reader = make_subscriber("daily@example.com", frequency="daily")
    for post in (Post(title="On the site"), EmailOnlyPost(title="Only by email")):
        mailing, _ = delivery.announce(post)
        with django_capture_on_commit_callbacks(execute=False):
            delivery.fan_out(mailing.pk)
    on_site, email_only = Mailing.objects.order_by("pk")
    assert "/posts/" in on_site.url
    assert email_only.url == f"{settings.SITE_URL}/email/{email_only.web_key}/"
    urls = [on_site.url, email_only.url]
    with time_machine.travel(timezone.now() + timedelta(days=1, hours=8)):
        with django_capture_on_commit_callbacks(execute=False):
            Digest.objects.create_due()
            delivery.send_digest_batch(0, MAX_ID)
    [message] = smtp_server.wait_for(1)
    assert message.envelope_recipients == [reader.email]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for url in urls:
        assert url in text and f'href="{url}"' in html


FUZZ = hypothesis.settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)


@FUZZ
@hypothesis.given(
    page=st.one_of(st.text(max_size=30), st.integers().map(str)),
    key=st.one_of(st.text(max_size=40), st.uuids().map(str)),
)
def test_any_page_number_or_key_answers_without_an_error(client, page, key):
    response = client.get("/newsletter/", {"page": page})
    assert response.status_code == 200
    path = "/email/" + quote(key, safe="") + "/"
    assert client.get(path).status_code == 404
