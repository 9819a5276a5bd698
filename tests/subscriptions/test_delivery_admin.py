"""The editors' view of mailings: progress, the ledger and the controls."""

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from subscriptions import delivery
from subscriptions.models import MAX_ID, Delivery, Mailing
from tests.factories import make_subscriber
from tests.subscriptions.test_delivery import Post, _announce_and_fan_out, readers

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("chief", "chief@example.com", "pw-chief-1234")
    client.force_login(user)
    return client


def _sent_mailing(smtp_server, capture):
    mailing = _announce_and_fan_out(Post(), capture)
    with capture(execute=False):
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    return mailing


def test_the_mailing_list_shows_progress_in_a_constant_number_of_queries(
    admin_client, smtp_server, django_capture_on_commit_callbacks
):
    counts = []
    for n in (1, 8):
        readers(3)
        for _ in range(n):
            _sent_mailing(smtp_server, django_capture_on_commit_callbacks)
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get("/admin/subscriptions/mailing/")
        assert response.status_code == 200
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]
    assert '<progress value="100"' in response.content.decode()


def test_the_ledger_is_searchable_by_address(
    admin_client, smtp_server, django_capture_on_commit_callbacks
):
    make_subscriber("findme@example.com")
    readers(2)
    mailing = _sent_mailing(smtp_server, django_capture_on_commit_callbacks)
    response = admin_client.get(
        "/admin/subscriptions/delivery/", {"q": "findme", "mailing__id__exact": mailing.pk}
    )
    assert response.status_code == 200
    assert list(response.context["cl"].result_list.values_list("subscriber__email", flat=True)) == [
        "findme@example.com"
    ]


def test_pause_resume_and_retry_actions_call_the_model(
    admin_client, smtp_server, django_capture_on_commit_callbacks
):
    (gone,) = readers(1)
    smtp_server.refuse[gone.email] = [550, 1]
    mailing = _sent_mailing(smtp_server, django_capture_on_commit_callbacks)
    assert Delivery.objects.get(subscriber=gone).status == Delivery.Status.FAILED
    with django_capture_on_commit_callbacks(execute=False):
        admin_client.post(
            "/admin/subscriptions/mailing/",
            {"action": "retry_failed", "_selected_action": [mailing.pk]},
        )
        assert Delivery.objects.get(subscriber=gone).status == Delivery.Status.PENDING
        admin_client.post(
            "/admin/subscriptions/mailing/", {"action": "pause", "_selected_action": [mailing.pk]}
        )
        mailing.refresh_from_db()
        assert mailing.status == Mailing.Status.PAUSED
        admin_client.post(
            "/admin/subscriptions/mailing/", {"action": "resume", "_selected_action": [mailing.pk]}
        )
        mailing.refresh_from_db()
        assert mailing.status == Mailing.Status.SENDING
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    assert Delivery.objects.get(subscriber=gone).status == Delivery.Status.SENT


def test_a_test_send_goes_to_the_editor_and_is_recorded_nowhere(
    admin_client, smtp_server, django_capture_on_commit_callbacks
):
    mailing = _announce_and_fan_out(Post(title="Draft look"), django_capture_on_commit_callbacks)
    admin_client.post(
        "/admin/subscriptions/mailing/", {"action": "send_test", "_selected_action": [mailing.pk]}
    )
    (message,) = smtp_server.wait_for(1)
    assert message.envelope_recipients == ["chief@example.com"]
    assert message["Subject"] == "[Test] Draft look"
    assert Delivery.objects.count() == 0


def test_the_article_admin_shows_its_mailing(
    admin_client, smtp_server, django_capture_on_commit_callbacks
):
    from tests.factories import make_article

    readers(2)
    with django_capture_on_commit_callbacks(execute=True):
        article = make_article("Shown in the admin")
    mailing = Mailing.objects.get()
    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    html = admin_client.get(f"/admin/newsroom/article/{article.pk}/change/").content.decode()
    assert f"/admin/subscriptions/mailing/{mailing.pk}/change/" in html
    assert "2 sent, 0 failed, 0 pending" in html
