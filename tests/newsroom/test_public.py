"""The public site: what readers can reach, and how it is rendered."""

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from newsroom.models import Article, ArticleEntity, Entity
from tests.factories import make_article, make_entity, make_staff

pytestmark = pytest.mark.django_db

PUBLIC_LISTS = ["/", "/feed/", "/feed/atom/", "/sitemap.xml", "/search/?q=Hidden"]


@pytest.fixture
def hidden_articles():
    """One article in each state readers must not see, all tagged with one entity."""
    entity = make_entity("Ada Lovelace")
    future = timezone.now() + timedelta(days=1)
    draft = make_article("Hidden draft", status=Article.Status.DRAFT, entities=[entity])
    scheduled = make_article(
        "Hidden scheduled", status=Article.Status.SCHEDULED, published_at=future, entities=[entity]
    )
    # Saved as published with a future time: that is scheduled too.
    future_published = make_article(
        "Hidden future", status=Article.Status.PUBLISHED, published_at=future, entities=[entity]
    )
    unpublished = make_article("Hidden unpublished", entities=[entity])
    unpublished.unpublish()
    return entity, [draft, scheduled, future_published, unpublished]


def test_a_future_publish_time_makes_a_published_article_scheduled(hidden_articles):
    _, articles = hidden_articles
    assert articles[2].status == Article.Status.SCHEDULED


def test_unpublished_articles_reach_no_public_page(client, hidden_articles):
    entity, articles = hidden_articles
    visible = make_article("Visible report", entities=[entity])
    for url in PUBLIC_LISTS + [entity.get_absolute_url(), entity.get_feed_url()]:
        content = client.get(url).content.decode()
        for article in articles:
            assert article.title not in content, url
            assert article.get_absolute_url() not in content, url
    assert visible.title in client.get("/").content.decode()
    assert visible.title in client.get(entity.get_absolute_url()).content.decode()
    assert visible.title in client.get(entity.get_feed_url()).content.decode()
    for article in articles:
        assert client.get(article.get_absolute_url()).status_code == 404


def test_search_finds_only_published_articles(client, hidden_articles):
    make_article("Hidden treasure found", body="<p>Gold coins.</p>")
    response = client.get("/search/", {"q": "hidden"})
    assert response.status_code == 200
    assert "Hidden treasure found" in response.content.decode()
    assert "Hidden draft" not in response.content.decode()


def test_a_too_long_search_is_refused_with_a_message(client):
    response = client.get("/search/", {"q": "x" * 201})
    assert response.status_code == 400
    assert "at most 200 characters" in response.content.decode()


def test_staff_can_preview_a_draft_and_it_is_never_cached(client, hidden_articles):
    _, articles = hidden_articles
    draft = articles[0]
    client.force_login(make_staff(role="Authors"))
    response = client.get(draft.get_preview_url())
    assert response.status_code == 200
    assert "Hidden draft" in response.content.decode()
    assert "Preview" in response.content.decode()
    assert "no-cache" in response["Cache-Control"] and "private" in response["Cache-Control"]
    assert response["X-Robots-Tag"] == "noindex"


def test_anonymous_readers_cannot_preview(client, hidden_articles):
    _, articles = hidden_articles
    assert client.get(articles[0].get_absolute_url()).status_code == 404
    response = client.get(articles[0].get_preview_url())
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_scripts_handlers_and_javascript_urls_never_survive_in_a_stored_body():
    article = make_article(
        body='<p onclick="steal()">Hi <script>alert(1)</script>'
        '<a href="javascript:alert(2)">x</a><img src="/a.png" onerror="alert(3)">'
        '<iframe src="https://evil.example"></iframe><style>p{}</style></p>'
        '<a href="JaVaScRiPt:alert(4)">y</a>'
    )
    article.refresh_from_db()
    body = article.body.lower()
    for forbidden in (
        "<script",
        "onclick",
        "onerror",
        "javascript:",
        "<iframe",
        "<style",
        "alert(1)",
    ):
        assert forbidden not in body
    assert '<img src="/a.png">' in article.body
    assert "Hi" in article.body


def _json_ld(html):
    blocks = re.findall(r'<script type="application/ld\+json">(.*?)</script>', html, re.S)
    assert len(blocks) == 1
    return json.loads(blocks[0])


def test_titles_and_names_are_escaped_everywhere(client):
    nasty = '</script><script>alert("t")</script><b>'
    entity = make_entity(f"Eve {nasty}", same_as="https://en.wikipedia.org/wiki/Eve")
    article = make_article(f"Title {nasty}", summary=f"Dek {nasty}", entities=[entity])
    pages = [
        article.get_absolute_url(),
        "/",
        entity.get_absolute_url(),
        "/people/",
        "/search/?q=Title",
        "/feed/",
        "/feed/atom/",
        entity.get_feed_url(),
    ]
    for url in pages:
        content = client.get(url).content.decode()
        assert "<script>alert" not in content, url
        assert "<b>" not in content, url
    html = client.get(article.get_absolute_url()).content.decode()
    data = _json_ld(html)
    assert data["headline"] == f"Title {nasty}"
    assert data["about"][0]["name"] == f"Eve {nasty}"


def test_article_structured_data_names_what_it_is_about_and_mentions(client):
    person = make_entity("Jeff Sessions", same_as="https://en.wikipedia.org/wiki/Jeff_Sessions")
    org = make_entity("Justice Department", kind=Entity.Kind.ORGANIZATION)
    place = make_entity("El Paso", kind=Entity.Kind.PLACE)
    article = make_article(
        "A report",
        byline="By Jane Doe",
        entities=[person, (org, ArticleEntity.Role.MENTIONS), (place, ArticleEntity.Role.MENTIONS)],
    )
    html = client.get(article.get_absolute_url()).content.decode()
    data = _json_ld(html)
    assert data["@type"] == "NewsArticle"
    assert data["about"] == [
        {
            "@type": "Person",
            "name": "Jeff Sessions",
            "url": "http://127.0.0.1:8000/people/jeff-sessions/",
            "sameAs": "https://en.wikipedia.org/wiki/Jeff_Sessions",
        }
    ]
    assert {m["@type"]: m["name"] for m in data["mentions"]} == {
        "Organization": "Justice Department",
        "Place": "El Paso",
    }
    assert data["author"] == {"@type": "Person", "name": "Jane Doe"}
    assert '<link rel="canonical" href="http://127.0.0.1:8000/articles/a-report/">' in html
    assert '<meta property="og:title" content="A report">' in html


def test_the_article_page_links_related_articles_that_share_entities(client):
    shared = make_entity("Shared Person")
    article = make_article("Main story", entities=[shared])
    related = make_article("Follow-up story", entities=[shared])
    unrelated = make_article("Other story", entities=[make_entity("Someone Else")])
    html = client.get(article.get_absolute_url()).content.decode()
    assert related.get_absolute_url() in html
    assert unrelated.get_absolute_url() not in html


def test_a_renamed_entity_keeps_its_old_address_working(client):
    entity = make_entity("Jeff Sesions")
    make_article("Story", entities=[entity])
    old_url, old_feed = entity.get_absolute_url(), entity.get_feed_url()
    entity.name = "Jeff Sessions"
    entity.save()
    assert entity.slug == "jeff-sessions"
    response = client.get(old_url)
    assert response.status_code == 301 and response["Location"] == "/people/jeff-sessions/"
    assert client.get(old_feed)["Location"] == "/people/jeff-sessions/feed/"
    assert client.get(response["Location"]).status_code == 200


def test_an_entity_whose_kind_changed_redirects_to_its_new_section(client):
    entity = make_entity("Acme", kind=Entity.Kind.PERSON)
    entity.kind = Entity.Kind.ORGANIZATION
    entity.save()
    response = client.get("/people/acme/")
    assert response.status_code == 301 and response["Location"] == "/organizations/acme/"


def test_a_slug_set_by_hand_survives_a_rename():
    entity = make_entity("Department of Justice", slug="doj")
    entity.name = "U.S. Department of Justice"
    entity.save()
    assert entity.slug == "doj"


def test_the_entity_index_lists_entities_by_kind(client):
    make_entity("Jeff Sessions")
    make_entity("El Paso", kind=Entity.Kind.PLACE)
    html = client.get("/places/").content.decode()
    assert "El Paso" in html and "Jeff Sessions" not in html
    html = client.get("/entities/").content.decode()
    assert "El Paso" in html and "Jeff Sessions" in html


def test_unknown_pages_get_the_friendly_404(client):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "We can’t find that page" in response.content.decode()


def test_robots_txt_points_to_the_sitemap(client):
    body = client.get("/robots.txt").content.decode()
    assert "Sitemap: http://127.0.0.1:8000/sitemap.xml" in body
    assert "Disallow: /admin/" in body


def test_the_sitemap_lists_published_articles_and_their_entities(client):
    entity = make_entity("Listed Person")
    article = make_article("Listed", entities=[entity])
    lonely = make_entity("Nobody Writes About Me")
    xml = client.get("/sitemap.xml").content.decode()
    assert article.get_absolute_url() in xml
    assert entity.get_absolute_url() in xml
    assert lonely.get_absolute_url() not in xml


def test_post_to_a_page_is_refused(client):
    assert client.post("/").status_code == 405


def _count_queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def _tag_many(article, n):
    for i in range(n):
        kind = list(Entity.Kind)[i % 4]
        ArticleEntity.objects.create(article=article, entity=make_entity(f"Entity {i}", kind=kind))


@pytest.mark.parametrize("url", ["/", "/feed/", "/feed/atom/", "/sitemap.xml", "/search/?q=Story"])
def test_lists_use_the_same_number_of_queries_for_1_and_20_articles(client, url):
    counts = []
    for n in (1, 20):
        Article.objects.all().delete()
        for i in range(n):
            _tag_many(make_article(f"Story {i}"), 3)
        counts.append(_count_queries(client, url))
    assert counts[0] == counts[1]


def test_the_article_page_uses_the_same_number_of_queries_for_1_and_20_entities(client):
    counts = []
    for n in (1, 20):
        article = make_article(f"Story with {n}")
        _tag_many(article, n)
        shared = article.tags.first().entity
        for i in range(n):  # as many related articles, sharing an entity
            make_article(f"Related {n}-{i}", entities=[shared])
        counts.append(_count_queries(client, article.get_absolute_url()))
    assert counts[0] == counts[1]


def test_entity_pages_use_the_same_number_of_queries_for_1_and_20_articles(client):
    counts = []
    for n in (1, 20):
        entity = make_entity(f"Busy {n}")
        for i in range(n):
            article = make_article(f"Story {n}-{i}", entities=[entity])
            _tag_many(article, 2)
        counts.append(_count_queries(client, entity.get_absolute_url()))
        counts.append(_count_queries(client, entity.get_feed_url()))
    assert counts[0] == counts[2] and counts[1] == counts[3]


def test_the_entity_index_uses_the_same_number_of_queries_for_1_and_20_entities(client):
    counts = []
    for n in (1, 20):
        Entity.objects.all().delete()
        for i in range(n):
            make_entity(f"Someone {i}", kind=list(Entity.Kind)[i % 4])
        counts.append(_count_queries(client, "/entities/"))
    assert counts[0] == counts[1]


def test_cached_pages_show_an_edit_or_a_publication_at_once(client):
    entity = make_entity("Cached Person")
    article = make_article("First title", entities=[entity])
    for url in ("/", article.get_absolute_url(), entity.get_absolute_url(), "/feed/"):
        assert "First title" in client.get(url).content.decode()
        assert "First title" in client.get(url).content.decode()  # from the cache
    article.title = "Second title"
    article.save()
    later = make_article("Another story", status=Article.Status.DRAFT, entities=[entity])
    later.publish()
    for url in ("/", article.get_absolute_url(), entity.get_absolute_url(), "/feed/"):
        html = client.get(url).content.decode()
        assert ">Second title<" in html and ">First title<" not in html, url
    assert "Another story" in client.get("/").content.decode()
    later.unpublish()
    assert "Another story" not in client.get("/").content.decode()
    assert client.get(later.get_absolute_url()).status_code == 404
    entity.name = "Renamed Person"
    entity.save()
    assert "Renamed Person" in client.get(article.get_absolute_url()).content.decode()


def test_a_cached_page_is_served_without_queries_and_with_each_readers_csrf_token(client):
    from django.test import Client

    article = make_article("Token story")
    url = article.get_absolute_url()
    client.get(url)  # fills the cache
    with CaptureQueriesContext(connection) as queries:
        first = client.get(url)
    assert len(queries.captured_queries) == 0
    other = Client(enforce_csrf_checks=True)
    second = other.get(url)
    tokens = [
        re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.content.decode()).group(1)
        for r in (first, second)
    ]
    assert "NEWSROOMCSRFSTANDIN" not in first.content.decode() + second.content.decode()
    # The second reader's token, posted back with their cookie, passes CSRF.
    response = other.post(
        "/subscribe/", {"csrfmiddlewaretoken": tokens[1], "email": "not-an-address"}
    )
    assert response.status_code == 400  # the form's answer, not a CSRF 403


def test_query_strings_do_not_fill_the_page_cache(client):
    from django.core.cache import cache

    article = make_article("Keyed story")
    for junk in ("a", "b", "c"):
        assert client.get(article.get_absolute_url(), {"utm_source": junk}).status_code == 200
    keys = list(cache.iter_keys("page:*"))
    assert len(keys) == 1


def test_the_cached_footer_records_the_page_without_its_query_string(client):
    from django.test import Client

    from subscriptions.models import Subscriber

    article = make_article("Consent story")
    url = article.get_absolute_url()
    # The first visitor comes with a query string and fills the page cache.
    first = client.get(url, {"utm_source": "newsletter", "email": "someone@example.com"})
    assert first.status_code == 200
    html = Client().get(url).content.decode()
    (source,) = re.findall(r'name="source" value="([^"]*)"', html)
    assert source == url
    # Whatever the form posts, the consent record keeps the page only.
    Client().post("/subscribe/", {"email": "ann@example.com", "source": f"{url}?utm=x#top"})
    assert Subscriber.objects.get().consent_page.endswith(url)


@pytest.mark.parametrize("query", ["\x00", "\x00\x00", " \x07\t", "\x1b[2J"])
def test_a_search_of_control_characters_finds_nothing_and_never_fails(client, query):
    make_entity("Ada Lovelace")
    make_article("Visible report")
    response = client.get("/search/", {"q": query})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Visible report" not in html
    assert "Ada Lovelace" not in html


def test_control_characters_in_a_search_are_spaces(client):
    make_article("Visible report")
    response = client.get("/search/", {"q": "visible\x00report"})
    assert response.status_code == 200
    assert "Visible report" in response.content.decode()


def test_a_failed_csrf_check_shows_the_sites_page_and_a_way_back(client, settings):
    from django.test import Client

    from subscriptions.models import Subscriber

    browser = Client(enforce_csrf_checks=True)
    response = browser.post("/subscribe/", {"email": "ann@example.com"})
    assert response.status_code == 403
    html = response.content.decode()
    assert "Please send the form again" in html
    assert f'<a class="site-name" href="/">{settings.SITE_NAME}</a>' in html
    assert '<a href="/subscribe/">Back to the form</a>' in html
    assert not Subscriber.objects.exists()
