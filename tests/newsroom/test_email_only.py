"""Email-only articles: mailed and in the newsletter archive, nowhere else on
the site; their one address is their email's web version."""

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

import subscriptions
from newsroom.models import Article, announce_article
from subscriptions.models import Mailing
from tests.factories import make_article, make_entity

pytestmark = pytest.mark.django_db

PUBLIC_LISTS = [
    "/",
    "/feed/",
    "/feed/atom/",
    "/sitemap.xml",
    "/search/?q=Members",
    "/search/?q=Lovelace",
]


@pytest.fixture
def email_only(django_capture_on_commit_callbacks):
    """An email-only article and a public one about the same person, both
    announced (the fan-out is never queued) and gone out."""
    entity = make_entity("Ada Lovelace")
    public = make_article("Lovelace in public", entities=[entity])
    secret = make_article("Members only: Lovelace letters", entities=[entity], email_only=True)
    with django_capture_on_commit_callbacks(execute=False):
        for article in (public, secret):
            announce_article(article.pk)
    Mailing.objects.update(status=Mailing.Status.SENDING)
    return entity, public, secret


def test_an_email_only_article_reaches_no_public_listing(client, email_only):
    entity, public, secret = email_only
    pages = PUBLIC_LISTS + [
        entity.get_absolute_url(),
        entity.get_feed_url(),
        public.get_absolute_url(),  # related links and JSON-LD
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        content = response.content.decode()
        # The public article is there (the page works), the email-only one is not.
        assert public.slug in content or url.startswith("/search/?q=Members"), url
        assert "Members only" not in content, url
        assert secret.slug not in content, url
    assert client.get(secret.get_absolute_url()).status_code == 404


def test_an_email_only_article_is_mailed_and_listed_in_the_archive(client, email_only):
    _, public, secret = email_only
    mailing = subscriptions.mailing_for(secret)
    assert mailing.url == f"{settings.SITE_URL}/email/{mailing.web_key}/"
    assert secret.slug not in mailing.url and f"/{secret.pk}/" not in mailing.url
    archive = client.get("/newsletter/").content.decode()
    assert "Members only: Lovelace letters" in archive and public.title in archive
    page = client.get(f"/email/{mailing.web_key}/")
    assert page.status_code == 200
    assert "Members only: Lovelace letters" in page.content.decode()
    assert page["X-Robots-Tag"] == "noindex"


def test_the_public_articles_mailing_links_its_article(email_only):
    _, public, _ = email_only
    assert subscriptions.mailing_for(public).url == settings.SITE_URL + public.get_absolute_url()


def test_an_email_only_article_must_be_emailed():
    article = make_article(email_only=True, email_subscribers=False)
    with pytest.raises(ValidationError) as error:
        article.full_clean()
    assert "email_only" in error.value.message_dict


def test_the_site_links_the_archive(client):
    html = client.get("/").content.decode()
    assert html.count('href="/newsletter/"') == 2  # the sections and the footer


def test_a_seed_can_be_email_only(tmp_path):
    seed = tmp_path / "letter.txt"
    seed.write_text(
        "---\ntitle: A letter to members\nemail_only: true\n---\nOnly for subscribers.\n"
    )
    call_command("load_seeds", str(seed), stdout=open("/dev/null", "w"))
    article = Article.objects.get(title="A letter to members")
    assert article.email_only and article.email_subscribers
    assert not Article.objects.published().filter(pk=article.pk).exists()
    assert Article.objects.live().filter(pk=article.pk).exists()


def test_a_seed_with_a_bad_email_only_value_is_refused_with_its_line(tmp_path):
    seed = tmp_path / "bad.txt"
    seed.write_text("---\ntitle: Bad\nemail_only: maybe\n---\nText.\n")
    with pytest.raises(CommandError, match=r"bad.txt, line 3: email_only must be true or false"):
        call_command("load_seeds", str(seed), stdout=open("/dev/null", "w"))
    assert not Article.objects.exists()
