"""What readers see, without a browser: the header's Subscribe link, the home
page's lead story and subscribe block, the article's byline, date, reading
time and caption, topics at the scale of a real newsroom, and the text part
of each email. The browser half is tests/e2e/test_looks.py."""

import re

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext

import subscriptions
from newsroom.models import Article, Entity, search_subscription_topics
from subscriptions import emails
from subscriptions.models import Subscriber
from tests.factories import make_article, make_entity, make_subscriber

pytestmark = pytest.mark.django_db


def header(html):
    return re.search(r"<header class=\"site-header\">.*?</header>", html, re.S).group(0)


def test_every_public_page_has_a_subscribe_link_in_its_header(client):
    entity = make_entity("Jeff Sessions")
    article = make_article("Sessions speaks", entities=[entity])
    for url in [
        "/",
        article.get_absolute_url(),
        entity.get_absolute_url(),
        "/people/",
        "/entities/",
        "/search/?q=Sessions",
        "/subscribe/",
        "/no-such-page/",
    ]:
        response = client.get(url)
        assert response.status_code in (200, 404), url
        assert 'href="/subscribe/">Subscribe</a>' in header(response.content.decode()), url
    assert b"<form" in client.get("/subscribe/").content


def test_the_home_page_leads_with_the_newest_story_and_offers_a_subscribe_block(client, settings):
    settings.NEWSROOM_ARTICLES_PER_PAGE = 2
    older = make_article("Older story")
    make_article("Newest story", summary="What happened today.")
    make_article("Oldest story", published_at=older.published_at.replace(year=2019))
    Article.objects.filter(pk=older.pk).update(published_at=older.published_at.replace(year=2020))
    html = client.get("/").content.decode()
    lead = re.search(r'<article class="lead-story.*?</article>', html, re.S).group(0)
    assert "Newest story" in lead and "What happened today." in lead
    assert html.count("Newest story") == 1  # not listed again under it
    assert 'name="source" value="/"' in html  # the consent records the home page
    assert "Older story" in html
    # The next pages are plain lists: no lead story.
    html = client.get("/?page=2").content.decode()
    assert 'class="lead-story' not in html and "Oldest story" in html


def test_the_article_shows_byline_date_reading_time_and_caption(client, tmp_path, settings):
    body = "".join(f"<p>{'word ' * 115}</p>" for _ in range(8))  # 920 words: 4 minutes
    article = make_article(
        "A long read", byline="By Jane Doe", body=body, lead_image_caption="Photo: Ann Lee"
    )
    Article.objects.filter(pk=article.pk).update(
        lead_image="leads/x.jpg", lead_image_alt="A river at dawn"
    )
    html = client.get(article.get_absolute_url()).content.decode()
    assert '<span class="byline">By Jane Doe</span>' in html
    assert "4 min read" in html
    assert '<img src="/media/leads/x.jpg" alt="A river at dawn">' in html
    assert "<figcaption>Photo: Ann Lee</figcaption>" in html
    assert 'rel="icon"' in html


def test_the_favicon_is_found_where_browsers_look(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("/newsroom/favicon.svg")


def test_topic_search_finds_names_and_aliases_and_suggests_the_busiest():
    sessions = make_entity("Jeff Sessions", aliases="Sessions\nAG Sessions")
    guild = make_entity("Session Musicians Guild", kind=Entity.Kind.ORGANIZATION)
    paso = make_entity("El Paso", kind=Entity.Kind.PLACE)
    make_article(entities=[paso])
    make_article(entities=[paso, sessions])
    assert search_subscription_topics("sess", limit=5) == [
        (guild.topic_key, "Session Musicians Guild"),
        (sessions.topic_key, "Jeff Sessions"),
    ]
    assert search_subscription_topics("AG Sess") == [(sessions.topic_key, "Jeff Sessions")]
    gone = "entity:999999"
    assert search_subscription_topics(keys=[paso.topic_key, gone, "el-paso"]) == [
        (paso.topic_key, "El Paso")
    ]
    assert search_subscription_topics(limit=2) == [
        (paso.topic_key, "El Paso"),
        (sessions.topic_key, "Jeff Sessions"),
    ]


def _queries_and_size(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries.captured_queries), len(response.content)


def test_subscribe_and_preferences_pages_do_not_grow_with_the_number_of_topics(client):
    Entity.objects.bulk_create(
        [Entity(name=f"Entity {i}", slug=f"entity-{i}") for i in range(1, 11)]
    )
    first, second = Entity.objects.order_by("pk")[:2]
    reader = make_subscriber(topics=[first.topic_key, second.topic_key])
    pages = ["/subscribe/", reader.preferences_path(), "/subscribe/?topic_q=Entity+1"]
    small = [_queries_and_size(client, url) for url in pages]
    Entity.objects.bulk_create(
        [Entity(name=f"Entity {i}", slug=f"entity-{i}") for i in range(11, 10_001)]
    )
    large = [_queries_and_size(client, url) for url in pages]
    for (queries, size), (queries_10k, size_10k) in zip(small, large, strict=True):
        assert queries_10k <= queries, (small, large)
        assert size_10k < size + 2_000  # a few more matches at most, never the list
    html = client.get(reader.preferences_path()).content.decode()
    assert re.search(rf'value="{first.topic_key}"[^>]*checked', html)
    assert html.count('name="topics"') <= 2 + 12


def test_a_followed_topic_and_a_search_survive_a_find_that_saves_nothing(client):
    paso = make_entity("El Paso", kind=Entity.Kind.PLACE)
    sessions = make_entity("Jeff Sessions")
    reader = make_subscriber(topics=[paso.topic_key], frequency="weekly")
    response = client.post(
        reader.preferences_path(),
        {"frequency": "daily", "topics": [paso.topic_key], "topic_q": "Jeff", "find": "1"},
    )
    html = response.content.decode()
    assert response.status_code == 200 and "Saved." not in html
    assert re.search(rf'value="{paso.topic_key}"[^>]*checked', html)
    assert re.search(rf'value="{sessions.topic_key}"(?![^>]*checked)', html)
    assert re.search(r'value="daily"[^>]*checked', html)  # the unsaved choice is kept
    reader.refresh_from_db()
    assert reader.frequency == "weekly"


def test_the_topic_search_answers_json(client):
    sessions = make_entity("Jeff Sessions")
    assert client.get("/subscribe/topics/", {"q": "jeff"}).json()["topics"] == [
        [sessions.topic_key, "Jeff Sessions"]
    ]


def _links(html):
    return {link.replace("&amp;", "&") for link in re.findall(r'href="([^"]+)"', html)}


def test_the_text_part_of_each_email_holds_every_link_of_its_html(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SUBSCRIPTIONS_EMAIL_CONTENT = "full"
    reader = make_subscriber(name="Ann")
    emails.welcome(reader).send()
    emails.confirmation(make_subscriber(status=Subscriber.Status.PENDING)).send()
    article = make_article(
        "Sessions speaks",
        byline="By Jane Doe",
        body='<p>See <a href="https://example.org/report?a=1&amp;b=2">the report</a>.</p>',
        entities=[make_entity("Jeff Sessions")],
    )
    mailing = subscriptions.announce(Article.objects.with_entities().get(pk=article.pk))
    assert len(mail.outbox) == 2
    parts = [(m.body, m.alternatives[0][0]) for m in mail.outbox]
    parts.append((mailing.text, mailing.html))
    for text, html in parts:
        assert _links(html) <= {link for link in _links(html) if link in text}
        assert not re.search(r"<[a-z/][^>]*>", text)
    assert "the report (https://example.org/report?a=1&b=2)" in mailing.text
    assert "By Jane Doe" in mailing.text and "By Jane Doe" in mailing.html
