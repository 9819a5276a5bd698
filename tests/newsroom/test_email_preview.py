"""The article form's "Preview email": the email as a reader will get it,
before publishing, for staff only, with nobody's links."""

import html as html_lib

import pytest
from django.contrib.auth.models import User
from django.core import mail

from newsroom.models import Article
from subscriptions import emails
from subscriptions.models import Mailing
from tests.factories import make_article, make_entity, make_staff

pytestmark = pytest.mark.django_db

# The placeholders' marker ("QZ", what splitting at "X" gave, turns up in a
# random CSRF token now and then).
MARK = emails.placeholder("")[: len(emails.placeholder("")) // 2]


def preview_url(article):
    return f"/admin/newsroom/article/{article.pk}/email-preview/"


def test_an_editor_sees_the_email_of_a_draft_in_html_and_text(client):
    client.force_login(make_staff("editor", "Editors"))
    draft = make_article(
        "Q&A: Sessions in El Paso",
        status=Article.Status.DRAFT,
        summary="What the report says <and does not>.",
        entities=[make_entity("Jeff Sessions")],
    )
    response = client.get(preview_url(draft))
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    page = response.content.decode()
    email = response.context["email"]
    assert email.subject == "Q&A: Sessions in El Paso"  # as written, not escaped
    assert "Q&A: Sessions in El Paso" in email.text and "View in browser [1]" in email.text
    assert "Jeff Sessions" in email.text and "Read on Newsroom" in email.text
    assert "Q&amp;A: Sessions in El Paso" in email.html and "View in browser</a>" in email.html
    # Shown on the page: the HTML in a sandboxed frame, the text as it is.
    assert html_lib.escape(email.html, quote=True) in page
    assert "<iframe" in page and "sandbox" in page
    assert html_lib.escape(email.text, quote=False).split("\n")[0] in page
    for part in (email.text, email.html, page):
        assert MARK not in part
        assert "/subscribe/unsubscribe/" not in part and "/subscribe/preferences/" not in part
    # Rendering only: nothing stored, nothing sent.
    assert not Mailing.objects.exists() and mail.outbox == []


def test_the_article_form_links_the_preview(client):
    client.force_login(make_staff("author", "Authors"))
    article = make_article(status=Article.Status.DRAFT)
    page = client.get(f"/admin/newsroom/article/{article.pk}/change/").content.decode()
    assert f'href="{preview_url(article)}"' in page and "Preview email" in page
    assert client.get(preview_url(article)).status_code == 200  # authors may look too


def test_strangers_cannot_preview(client):
    article = make_article(status=Article.Status.DRAFT, title="Secret draft")
    response = client.get(preview_url(article))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    User.objects.create_user("reader", "reader@example.com", "pw-pw-pw-pw")
    client.login(username="reader", password="pw-pw-pw-pw")
    response = client.get(preview_url(article))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    # Staff without the right to see articles.
    User.objects.create_user("intern", "intern@example.com", "pw-pw-pw-pw", is_staff=True)
    client.login(username="intern", password="pw-pw-pw-pw")
    response = client.get(preview_url(article))
    assert response.status_code == 403
    assert b"Secret draft" not in response.content


def test_an_unknown_article_is_a_404(admin_client):
    assert admin_client.get("/admin/newsroom/article/999999/email-preview/").status_code == 404
    assert admin_client.get("/admin/newsroom/article/abc/email-preview/").status_code == 404
