"""Erasure ("delete me") leaves no copy of the address anywhere in the database."""

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.urls import reverse

from subscriptions import tokens
from subscriptions.models import Subscriber

pytestmark = pytest.mark.django_db

TYPED = "Ann.Erasable@Bücher.example"
LOCAL_PART = "ann.erasable"  # Any stored copy of the address contains it.


def every_stored_text():
    """(table, text) for every value of every row of every table, session
    data decoded."""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            # Table names come from the database itself, quoted.
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, memoryview):
                        value = value.tobytes()
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    yield table, str(value)
                if table == "django_session":
                    yield table, str(SessionStore().decode(row[1]))


def tables_holding(needle):
    return sorted({table for table, text in every_stored_text() if needle in text.lower()})


def test_delete_me_leaves_no_copy_of_the_address(client, admin_client):
    client.post(
        "/subscribe/",
        {"email": TYPED, "name": "Ann", "form": "topic", "topics": "el-paso", "source": "/a/"},
    )
    subscriber = Subscriber.objects.get()
    client.post(reverse("subscriptions:confirm", args=[subscriber.make_token("confirm")]))
    # An editor touches the record: the admin's history now names the address.
    admin_client.post(
        f"/admin/subscriptions/subscriber/{subscriber.pk}/change/",
        {"name": "Ann Lee", "frequency": "daily"},
    )
    admin_client.post(
        "/admin/subscriptions/subscriber/",
        {"action": "unsubscribe", "_selected_action": [subscriber.pk]},
    )
    assert tables_holding(LOCAL_PART) == [
        "django_admin_log",
        "subscriptions_subscriber",
    ]  # The scan finds copies where they are.

    token = subscriber.make_token(tokens.DATA)  # The link emailed when asked for.
    response = client.post(reverse("subscriptions:erase", args=[token]))
    assert response.status_code == 200

    assert tables_holding(LOCAL_PART) == []
    assert tables_holding("xn--bcher-kva") == []
    assert not Subscriber.objects.exists()
