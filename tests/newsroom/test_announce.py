"""Newsroom hands each article to subscriptions.announce() once it goes live."""

from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from newsroom.models import Article, ArticleEntity
from newsroom.tasks import publish_due_articles
from subscriptions import delivery
from subscriptions.models import Mailing
from tests.factories import make_article, make_entity, make_staff, make_subscriber
from tests.support import wait_until


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    """Run what is queued for after commit, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.mark.django_db
def test_publishing_from_the_admin_announces_the_article_with_its_entities(client, on_commit):
    client.force_login(make_staff(role="Editors"))
    person = make_entity("Jeff Sessions")
    with on_commit():
        response = client.post(
            "/admin/newsroom/article/add/",
            {
                "title": "Sessions speaks",
                "summary": "He spoke.",
                "body": "<p>Text.</p>",
                "status": "published",
                "email_subscribers": "on",
                "tags-TOTAL_FORMS": "1",
                "tags-INITIAL_FORMS": "0",
                "tags-0-entity": person.pk,
                "tags-0-role": "about",
            },
        )
    assert response.status_code == 302
    mailing = Mailing.objects.get()
    article = Article.objects.get()
    assert mailing.post_key == f"newsroom.article:{article.pk}"
    assert mailing.topics == [person.topic_key]
    assert mailing.title == "Sessions speaks"
    assert mailing.url == "http://127.0.0.1:8000/articles/sessions-speaks/"
    assert "He spoke." in mailing.text


@pytest.mark.django_db
def test_drafts_scheduled_and_unticked_articles_are_not_announced(on_commit):
    with on_commit():
        make_article("Draft", status=Article.Status.DRAFT)
        make_article(
            "Later",
            status=Article.Status.SCHEDULED,
            published_at=timezone.now() + timedelta(days=1),
        )
        make_article("Correction", email_subscribers=False)
    assert Mailing.objects.count() == 0


@pytest.mark.django_db
def test_republishing_and_editing_never_make_a_second_mailing(on_commit):
    with on_commit():
        article = make_article("Once", status=Article.Status.DRAFT)
        article.publish()
        article.publish()
        article.unpublish()
        article.publish()
        article.title = "Once, edited"
        article.save()
    assert Mailing.objects.count() == 1


@pytest.mark.django_db
def test_the_beat_task_announces_scheduled_articles_when_they_go_live(on_commit):
    when = timezone.now() + timedelta(minutes=5)
    with on_commit():
        make_article("Scheduled", status=Article.Status.SCHEDULED, published_at=when)
    assert Mailing.objects.count() == 0
    with time_machine.travel(when + timedelta(seconds=1)), on_commit():
        publish_due_articles()
        publish_due_articles()
    assert Mailing.objects.get().title == "Scheduled"


@pytest.mark.django_db
def test_load_seeds_announces_new_articles_unless_told_not_to(on_commit, tmp_path):
    seed = tmp_path / "one.txt"
    seed.write_text("A seeded story. It has words.\n", encoding="utf-8")
    other = tmp_path / "two.txt"
    other.write_text("A quiet story. Nobody is told.\n", encoding="utf-8")
    with on_commit():
        call_command("load_seeds", str(seed), stdout=open("/dev/null", "w"))
        call_command("load_seeds", str(seed), stdout=open("/dev/null", "w"))
        call_command("load_seeds", str(other), "--no-email", stdout=open("/dev/null", "w"))
    assert list(Mailing.objects.values_list("title", flat=True)) == ["A seeded story."]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_publishing_emails_each_follower_once(celery_worker, smtp_server):
    sessions = make_entity("Jeff Sessions")
    el_paso = make_entity("El Paso")
    elsewhere = make_entity("Elsewhere")
    both = make_subscriber("both@example.com", topics=[sessions.topic_key, el_paso.topic_key])
    everything = make_subscriber("all@example.com")
    make_subscriber("other@example.com", topics=[elsewhere.topic_key])
    with transaction.atomic():
        article = make_article("Sessions visits El Paso", status=Article.Status.DRAFT)
        for entity in (sessions, el_paso):
            ArticleEntity.objects.create(article=article, entity=entity)
        article.publish()
    mailing = wait_until(Mailing.objects.first, message="the mailing")

    def done():
        mailing.refresh_from_db()
        return mailing.status == Mailing.Status.DONE

    wait_until(done, timeout=60, message="the mailing to finish")
    celery_worker.drain()
    counts = Counter(r for m in smtp_server.messages for r in m.envelope_recipients)
    assert counts == Counter({both.email: 1, everything.email: 1})
    message = smtp_server.messages[0]
    assert message["Subject"] == "Sessions visits El Paso"
    assert (
        "http://127.0.0.1:8000/people/jeff-sessions/" in message.get_body(("html",)).get_content()
    )


@pytest.mark.django_db
def test_unpublishing_pauses_the_articles_mailing(on_commit):
    make_subscriber("reader@example.com")
    with on_commit():
        article = make_article("Pulled")
    mailing = Mailing.objects.get()
    with on_commit():
        delivery.fan_out(mailing.pk)
    article.status = Article.Status.DRAFT
    article.save()  # as the admin form does
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.PAUSED


@pytest.mark.django_db
def test_a_live_article_whose_announce_was_lost_gets_its_mailing_from_the_sweeper(on_commit):
    from newsroom.tasks import announce_missed_articles

    make_subscriber("reader@example.com")
    now = timezone.now()

    def live(title, published_at, email=True):
        article = make_article(title, status=Article.Status.DRAFT, email_subscribers=email)
        # Taken live, and the process died before the after-commit announce.
        Article.objects.filter(pk=article.pk).update(
            status=Article.Status.PUBLISHED, published_at=published_at
        )
        return article

    lost = live("Lost announce", now - timedelta(minutes=5))
    live("Not for email", now - timedelta(minutes=5), email=False)
    live("Long before the newsletter", now - timedelta(days=30))
    just_now = live("Announce still on its way", now)
    assert Mailing.objects.count() == 0

    late_reader = make_subscriber("late@example.com", confirmed_at=now - timedelta(minutes=1))
    with on_commit():
        assert announce_missed_articles() == [lost.pk]
    assert list(Mailing.objects.values_list("title", flat=True)) == ["Lost announce"]
    # Its audience is who was confirmed when it went live, five minutes ago.
    recipients = {s.email for s in Mailing.objects.get().recipients()}
    assert recipients == {"reader@example.com"} and late_reader.email not in recipients
    with on_commit():
        assert announce_missed_articles() == []  # announced once, however often it runs
    with time_machine.travel(now + timedelta(minutes=2)):
        with on_commit():
            assert announce_missed_articles() == [just_now.pk]
    assert Mailing.objects.count() == 2
