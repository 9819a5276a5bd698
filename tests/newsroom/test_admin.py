"""The admin for editors: roles, publishing, scheduling."""

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from newsroom.models import Article, ArticleEntity, Entity
from newsroom.tasks import publish_due_articles
from tests.factories import make_article, make_entity, make_staff

pytestmark = pytest.mark.django_db


def _article_form(**overrides):
    data = {
        "title": "Fresh news",
        "summary": "",
        "body": "<p>Body text.</p>",
        "byline": "By A. Writer",
        "lead_image_alt": "",
        "status": "draft",
        "published_at_0": "",
        "published_at_1": "",
        "email_subscribers": "on",
        "slug": "",
        "tags-TOTAL_FORMS": "0",
        "tags-INITIAL_FORMS": "0",
        "tags-MIN_NUM_FORMS": "0",
        "tags-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_an_editor_publishes_an_article_with_tagged_entities_from_the_form(client):
    client.force_login(make_staff(role="Editors"))
    person = make_entity("Jeff Sessions")
    place = make_entity("El Paso", kind=Entity.Kind.PLACE)
    response = client.post(
        "/admin/newsroom/article/add/",
        _article_form(
            status="published",
            **{
                "tags-TOTAL_FORMS": "2",
                "tags-0-entity": person.pk,
                "tags-0-role": "about",
                "tags-1-entity": place.pk,
                "tags-1-role": "mentions",
            },
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    article = Article.objects.get()
    assert article.is_public
    assert article.author.username == "editor"
    assert set(article.tags.values_list("entity__name", "role")) == {
        ("Jeff Sessions", "about"),
        ("El Paso", "mentions"),
    }


def test_an_author_cannot_publish(client):
    client.force_login(make_staff("author", role="Authors"))
    response = client.post("/admin/newsroom/article/add/", _article_form(status="published"))
    assert response.status_code == 302
    assert Article.objects.get().status == Article.Status.DRAFT
    draft = Article.objects.get()
    response = client.post(
        "/admin/newsroom/article/",
        {"action": "publish", "_selected_action": [draft.pk]},
    )
    draft.refresh_from_db()
    assert draft.status == Article.Status.DRAFT
    assert 'value="publish"' not in client.get("/admin/newsroom/article/").content.decode()


def test_the_publish_and_unpublish_actions_call_the_model(client):
    client.force_login(make_staff(role="Editors"))
    draft = make_article("Draft one", status=Article.Status.DRAFT)
    client.post("/admin/newsroom/article/", {"action": "publish", "_selected_action": [draft.pk]})
    draft.refresh_from_db()
    assert draft.is_public
    client.post("/admin/newsroom/article/", {"action": "unpublish", "_selected_action": [draft.pk]})
    draft.refresh_from_db()
    assert draft.status == Article.Status.DRAFT


def test_scheduling_without_a_time_is_refused_with_a_message(client):
    client.force_login(make_staff(role="Editors"))
    response = client.post("/admin/newsroom/article/add/", _article_form(status="scheduled"))
    assert response.status_code == 200
    assert "Choose when the scheduled article goes live." in response.content.decode()
    assert Article.objects.count() == 0


def test_the_beat_task_publishes_due_articles_once():
    when = timezone.now() + timedelta(minutes=10)
    article = make_article("Later", status=Article.Status.SCHEDULED, published_at=when)
    assert publish_due_articles() == []
    with time_machine.travel(when + timedelta(seconds=30)):
        assert Article.objects.published().count() == 0
        assert publish_due_articles() == [article.pk]
        assert publish_due_articles() == []  # a second tick finds nothing to do
        article.refresh_from_db()
        assert article.is_public
        assert article.published_at == when


def test_publish_returns_true_only_for_the_call_that_took_it_live():
    article = make_article("Race", status=Article.Status.DRAFT)
    first, second = Article.objects.get(pk=article.pk), Article.objects.get(pk=article.pk)
    assert first.publish() is True
    assert second.publish() is False


def test_the_roles_exist_with_the_right_powers():
    editor = make_staff("ed", role="Editors")
    author = make_staff("au", role="Authors")
    assert editor.has_perm("newsroom.publish_article")
    assert not author.has_perm("newsroom.publish_article")
    assert author.has_perm("newsroom.change_article") and author.has_perm("newsroom.add_entity")
    assert not author.has_perm("newsroom.delete_article")


def test_the_entity_autocomplete_finds_entities_by_alias(client):
    client.force_login(make_staff(role="Authors"))
    make_entity("Jeff Sessions", aliases="Sessions\nJefferson Beauregard Sessions")
    response = client.get(
        "/admin/autocomplete/",
        {
            "term": "Beauregard",
            "app_label": "newsroom",
            "model_name": "articleentity",
            "field_name": "entity",
        },
    )
    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["Jeff Sessions"]


def test_the_preview_link_is_view_on_site_for_drafts(client):
    client.force_login(make_staff(role="Editors"))
    draft = make_article("Draft", status=Article.Status.DRAFT)
    html = client.get(f"/admin/newsroom/article/{draft.pk}/change/").content.decode()
    assert draft.get_preview_url() in html


@pytest.mark.parametrize("url", ["/admin/newsroom/article/", "/admin/newsroom/entity/"])
def test_admin_lists_use_the_same_number_of_queries_for_1_and_20_rows(client, url):
    client.force_login(make_staff(role="Editors"))
    counts = []
    for n in (1, 20):
        Article.objects.all().delete()
        for i in range(n):
            article = make_article(f"Row {n}-{i}")
            for j in range(3):
                ArticleEntity.objects.create(article=article, entity=make_entity(f"E {n}-{i}-{j}"))
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]
