import csv
import io

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile

from subscriptions import delivery
from subscriptions.models import Subscriber
from tests.factories import make_subscriber

Status = Subscriber.Status
CHANGELIST = "/admin/subscriptions/subscriber/"
pytestmark = pytest.mark.django_db


def make_many(n):
    for i in range(n):
        make_subscriber(topics=["el-paso", "jeff-sessions"] if i % 2 else ())


# The session, the user, the status counts, the paginator's count, the page of
# rows, the follows of those rows (one prefetch), the date hierarchy (2), and
# the subscribers-over-time chart (3: stats.subscriber_growth).
LIST_QUERIES = 11


@pytest.mark.parametrize("rows", [3, 60])
def test_the_list_takes_the_same_queries_for_any_number_of_rows(
    admin_client, django_assert_num_queries, rows
):
    make_many(rows)
    with django_assert_num_queries(LIST_QUERIES):
        response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    assert response.content.count(b'class="action-select"') == rows


def test_the_list_shows_counts_by_status(admin_client):
    make_many(2)
    make_subscriber(status=Status.PENDING)
    html = admin_client.get(CHANGELIST).content.decode()
    assert "<strong>Confirmed:</strong> 2" in html
    assert "<strong>Pending confirmation:</strong> 1" in html
    assert "<strong>Unsubscribed:</strong> 0" in html


def test_it_searches_and_filters_by_followed_topic(admin_client):
    make_subscriber("ann@example.com", topics=["el-paso"])
    make_subscriber("bob@example.com", topics=["jeff-sessions"])
    make_subscriber("cat@example.com")
    html = admin_client.get(CHANGELIST, {"topic": "el-paso"}).content.decode()
    assert "ann@example.com" in html and "bob@example.com" not in html
    html = admin_client.get(CHANGELIST, {"topic": "__everything__"}).content.decode()
    assert "cat@example.com" in html and "ann@example.com" not in html
    html = admin_client.get(CHANGELIST, {"q": "bob@"}).content.decode()
    assert "bob@example.com" in html and "ann@example.com" not in html
    html = admin_client.get(CHANGELIST, {"status__exact": "pending"}).content.decode()
    assert "ann@example.com" not in html


def test_actions_unsubscribe_and_suppress(admin_client):
    ann = make_subscriber()
    bob = make_subscriber()
    for action, subscriber, status in [
        ("unsubscribe", ann, Status.UNSUBSCRIBED),
        ("suppress", bob, Status.SUPPRESSED),
    ]:
        response = admin_client.post(
            CHANGELIST, {"action": action, "_selected_action": [subscriber.pk]}
        )
        assert response.status_code == 302
        subscriber.refresh_from_db()
        assert subscriber.status == status


def test_resend_confirmation_respects_the_window(admin_client):
    pending = make_subscriber(status=Status.PENDING)
    confirmed = make_subscriber()
    data = {"action": "resend_confirmation", "_selected_action": [pending.pk, confirmed.pk]}
    response = admin_client.post(CHANGELIST, data, follow=True)
    assert b"1 confirmation emails queued" in response.content
    response = admin_client.post(CHANGELIST, data, follow=True)
    assert b"0 confirmation emails queued" in response.content
    confirmed.refresh_from_db()
    assert confirmed.confirmation_sent_at is None


def test_the_import_page_keeps_good_rows_and_lists_bad_ones(admin_client):
    make_subscriber("old@example.com", status=Status.UNSUBSCRIBED)
    upload = SimpleUploadedFile(
        "list.csv",
        b"email,name,frequency\nann@example.com,Ann,daily\nnope,X,daily\n"
        b"old@example.com,,\nbob@example.com,,fortnightly\n",
        content_type="text/csv",
    )
    response = admin_client.post(CHANGELIST + "import/", {"file": upload, "confirmed": "on"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "1 subscribers added" in html
    assert "<td>3</td><td>not a valid email address: &#x27;nope&#x27;</td>" in html
    assert "<td>5</td>" in html
    ann = Subscriber.objects.get(email="ann@example.com")
    assert (ann.status, ann.frequency) == (Status.CONFIRMED, "daily")
    assert "consent collected elsewhere" in ann.consent_wording
    assert Subscriber.objects.get(email="old@example.com").status == Status.UNSUBSCRIBED


def test_the_import_page_refuses_a_file_without_an_email_column(admin_client):
    upload = SimpleUploadedFile("list.csv", b"name\nAnn\n", content_type="text/csv")
    response = admin_client.post(CHANGELIST + "import/", {"file": upload})
    assert response.status_code == 400
    assert "including “email”" in response.content.decode()


def test_export_streams_the_filtered_list(admin_client):
    make_subscriber("ann@example.com", name="Ann", topics=["el-paso"])
    make_subscriber("bob@example.com")
    response = admin_client.get(CHANGELIST + "export/", {"topic": "el-paso"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows == [
        ["email", "name", "frequency", "topics"],
        ["ann@example.com", "Ann", "instant", "el-paso"],
    ]


def test_export_action(admin_client):
    ann = make_subscriber("ann@example.com")
    make_subscriber("bob@example.com")
    response = admin_client.post(CHANGELIST, {"action": "export_csv", "_selected_action": [ann.pk]})
    body = b"".join(response.streaming_content).decode()
    assert "ann@example.com" in body and "bob@example.com" not in body


def test_the_detail_page_shows_the_consent_record(admin_client):
    subscriber = make_subscriber(consent_wording="Discover more.", consent_page="http://x/a/")
    html = admin_client.get(f"{CHANGELIST}{subscriber.pk}/change/").content.decode()
    assert "Discover more." in html and "http://x/a/" in html


def test_editing_in_the_admin_is_logged(admin_client):
    subscriber = make_subscriber()
    admin_client.post(CHANGELIST, {"action": "unsubscribe", "_selected_action": [subscriber.pk]})
    response = admin_client.post(
        f"{CHANGELIST}{subscriber.pk}/change/",
        {"name": "Ann", "frequency": "daily", "status": "confirmed"},
    )
    assert response.status_code == 302
    assert LogEntry.objects.filter(object_id=str(subscriber.pk)).exists()


def test_the_admin_index_shows_the_newsletter_in_a_constant_number_of_queries(
    admin_client, django_capture_on_commit_callbacks
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.subscriptions.test_delivery import Post

    make_many(3)
    counts = []
    for n in (1, 8):
        with django_capture_on_commit_callbacks(execute=False):
            for i in range(n):
                delivery.announce(Post(title=f"Post {n}-{i}", topics=["el-paso"]))
        with CaptureQueriesContext(connection) as queries:
            html = admin_client.get("/admin/").content.decode()
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]
    assert 'id="subscriptions-dashboard"' in html
    assert "<strong>3</strong> confirmed" in html
    assert html.count('<progress value="') == 5  # the latest five mailings
    assert "Post 8-7" in html and "Post 1-0" not in html


def test_the_mailing_list_names_its_topics(admin_client, django_capture_on_commit_callbacks):
    from tests.subscriptions.test_delivery import Post

    with django_capture_on_commit_callbacks(execute=False):
        delivery.announce(Post(title="About El Paso", topics=["el-paso", "gone-topic"]))
    html = admin_client.get("/admin/subscriptions/mailing/").content.decode()
    assert "El Paso, gone-topic" in html
    assert "[&#x27;el-paso" not in html and "['el-paso" not in html
