"""The newsroom side of the editor's newsletter tools: an article's email
send time, "sending in 3:41 — Cancel" on its admin page, and corrections
on its public page."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from newsroom.models import Article
from newsroom.tasks import announce_missed_articles
from subscriptions.models import Mailing
from tests.factories import make_article, make_staff, make_subscriber


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    return lambda: django_capture_on_commit_callbacks(execute=True)


def _form(**fields):
    return {
        "title": "Sessions speaks",
        "summary": "He spoke.",
        "body": "<p>Text.</p>",
        "status": "published",
        "email_subscribers": "on",
        "tags-TOTAL_FORMS": "0",
        "tags-INITIAL_FORMS": "0",
        **fields,
    }


@pytest.mark.django_db
def test_an_editor_schedules_the_email_later_than_publication(client, on_commit, settings):
    settings.SUBSCRIPTIONS_SEND_DELAY = 60
    client.force_login(make_staff(role="Editors"))
    make_subscriber()
    now = timezone.now().replace(microsecond=0)
    at = now + timedelta(hours=2)
    with time_machine.travel(now, tick=False), on_commit():
        response = client.post(
            "/admin/newsroom/article/add/",
            _form(email_send_at_0=at.strftime("%Y-%m-%d"), email_send_at_1=at.strftime("%H:%M:%S")),
        )
    assert response.status_code == 302
    article = Article.objects.get()
    assert article.is_public and article.email_send_at == at
    mailing = Mailing.objects.get()
    assert (mailing.status, mailing.send_at) == (Mailing.Status.QUEUED, at)

    with time_machine.travel(now + timedelta(minutes=3), tick=False):
        page = client.get(f"/admin/newsroom/article/{article.pk}/change/").content.decode()
    assert ">1:57:00</time> — <button" in page
    assert f'formaction="/admin/subscriptions/mailing/{mailing.pk}/cancel/"' in page
    assert "subscriptions/countdown.js" in page


@pytest.mark.django_db
def test_publishing_waits_the_undo_window_by_default(client, on_commit, settings):
    settings.SUBSCRIPTIONS_SEND_DELAY = 60
    client.force_login(make_staff(role="Editors"))
    now = timezone.now()
    with time_machine.travel(now, tick=False), on_commit():
        client.post("/admin/newsroom/article/add/", _form())
    assert Mailing.objects.get().send_at == now + timedelta(seconds=60)


@pytest.mark.django_db
def test_an_email_time_before_the_article_goes_live_is_refused(client, on_commit):
    client.force_login(make_staff(role="Editors"))
    live = timezone.now() + timedelta(days=1)
    early = live - timedelta(hours=1)
    with on_commit():
        response = client.post(
            "/admin/newsroom/article/add/",
            _form(
                published_at_0=live.strftime("%Y-%m-%d"),
                published_at_1=live.strftime("%H:%M:%S"),
                email_send_at_0=early.strftime("%Y-%m-%d"),
                email_send_at_1=early.strftime("%H:%M:%S"),
            ),
        )
    assert response.status_code == 200
    assert "The email cannot go out before the article is live." in response.content.decode()
    assert not Article.objects.exists() and not Mailing.objects.exists()


@pytest.mark.django_db
def test_a_lost_announce_keeps_the_articles_send_time(on_commit, settings):
    settings.SUBSCRIPTIONS_SEND_DELAY = 60
    now = timezone.now()
    at = now + timedelta(hours=1)
    article = make_article("Lost", status=Article.Status.DRAFT, email_send_at=at)
    Article.objects.filter(pk=article.pk).update(
        status=Article.Status.PUBLISHED, published_at=now - timedelta(minutes=5)
    )
    with on_commit():
        assert announce_missed_articles() == [article.pk]
    mailing = Mailing.objects.get()
    assert mailing.send_at == at
    assert mailing.created_at == now - timedelta(minutes=5)  # the audience: when it went live


@pytest.mark.django_db
def test_the_article_page_shows_its_corrections_as_soon_as_one_is_sent(client, on_commit, settings):
    from subscriptions import delivery

    settings.SUBSCRIPTIONS_SEND_DELAY = 0
    with on_commit():
        article = make_article("Sessions visits El Paso")
    mailing = Mailing.objects.get()
    Mailing.objects.filter(pk=mailing.pk).update(status=Mailing.Status.DONE)
    mailing.refresh_from_db()
    url = article.get_absolute_url()
    assert 'class="corrections"' not in client.get(url).content.decode()  # now cached
    with on_commit():
        delivery.correct(mailing, "He visited on Tuesday & <not> Monday.")
    page = client.get(url).content.decode()
    assert 'class="corrections"' in page
    assert "He visited on Tuesday &amp; &lt;not&gt; Monday." in page
