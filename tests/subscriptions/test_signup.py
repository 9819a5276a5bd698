"""Sign-up (delivery.subscribe): double opt-in, consent, and what an
address already stored keeps."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from subscriptions import delivery
from subscriptions.models import Consent, Subscriber
from tests.factories import make_subscriber

Status = Subscriber.Status
CONSENT = Consent(wording="Discover more. Subscribe.", page="http://testserver/x/", ip="10.0.0.1")


@pytest.mark.django_db
class TestSubscribe:
    def test_it_creates_a_pending_subscriber_with_the_consent_record(self):
        subscriber = delivery.subscribe(
            " Ann@Example.com ",
            name="Ann",
            frequency=Subscriber.Frequency.WEEKLY,
            topics=["el-paso", "jeff-sessions"],
            consent=Consent(
                wording="Follow El Paso by email.",
                page="http://testserver/places/el-paso/",
                ip="10.0.0.9",
                user_agent="Firefox",
            ),
        )
        subscriber.refresh_from_db()
        assert subscriber.email == "Ann@example.com"
        assert subscriber.status == Status.PENDING
        assert subscriber.frequency == "weekly"
        assert not subscriber.follows_everything
        assert subscriber.topics() == ["el-paso", "jeff-sessions"]
        assert subscriber.consent_wording == "Follow El Paso by email."
        assert subscriber.consent_page == "http://testserver/places/el-paso/"
        assert subscriber.consent_ip == "10.0.0.9"
        assert subscriber.consent_user_agent == "Firefox"
        assert subscriber.consent_at is not None
        assert subscriber.confirmation_sent_at is not None

    def test_one_address_is_one_subscriber_however_it_is_spelled(self):
        delivery.subscribe("ann@bücher.example", consent=CONSENT)
        delivery.subscribe(" ann@XN--BCHER-KVA.example", consent=CONSENT)
        assert Subscriber.objects.count() == 1

    def test_a_pending_address_gets_one_confirmation_per_window(self):
        first = delivery.subscribe("ann@example.com", consent=CONSENT)
        sent_at = first.confirmation_sent_at
        with time_machine.travel(timezone.now() + timedelta(minutes=59)):
            again = delivery.subscribe("ann@example.com", consent=CONSENT)
            assert not delivery.request_confirmation(again)
        assert again.confirmation_sent_at == sent_at
        with time_machine.travel(timezone.now() + timedelta(minutes=61)):
            later = delivery.subscribe("ann@example.com", consent=CONSENT)
        assert later.confirmation_sent_at > sent_at

    def test_it_leaves_a_confirmed_subscriber_exactly_as_it_was(self):
        subscriber = make_subscriber("ann@example.com", name="Ann", topics=["el-paso"])
        delivery.subscribe(
            "ann@example.com", name="Mallory", topics=["jeff-sessions"], consent=CONSENT
        )
        subscriber.refresh_from_db()
        assert (subscriber.status, subscriber.name, subscriber.topics()) == (
            Status.CONFIRMED,
            "Ann",
            ["el-paso"],
        )
        assert subscriber.confirmation_sent_at is None

    def test_a_suppressed_address_is_never_asked_again(self):
        subscriber = make_subscriber("ann@example.com", status=Status.SUPPRESSED)
        delivery.subscribe("ann@example.com", consent=CONSENT)
        subscriber.refresh_from_db()
        assert subscriber.status == Status.SUPPRESSED
        assert subscriber.confirmation_sent_at is None

    def test_an_unsubscribed_reader_can_come_back_through_opt_in(self):
        subscriber = make_subscriber("ann@example.com", status=Status.UNSUBSCRIBED)
        delivery.subscribe("ann@example.com", topics=["el-paso"], consent=CONSENT)
        subscriber.refresh_from_db()
        assert subscriber.status == Status.PENDING
        assert subscriber.topics() == ["el-paso"]
        assert subscriber.confirm()
        assert subscriber.status == Status.CONFIRMED


# A viral article's sign-ups: a new address costs one INSERT, which claims the
# confirmation email too; nothing is read first (the unique email catches a known one).


@pytest.mark.django_db
@pytest.mark.parametrize("topics", [[], ["el-paso", "jeff-sessions"]])
def test_a_new_address_signs_up_with_one_insert_that_claims_its_confirmation(
    client, topics, django_capture_on_commit_callbacks
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    data = {"email": "New@Example.com", "form": "footer", "source": "/", "topics": topics}
    with django_capture_on_commit_callbacks(execute=False) as queued:
        with CaptureQueriesContext(connection) as queries:
            response = client.post("/subscribe/", data)
    assert response.status_code == 200
    writes = [q["sql"].split()[0] for q in queries if "SAVEPOINT" not in q["sql"]]
    # No UPDATE for the confirmation's claim: the INSERT wrote its time.
    assert writes == ["INSERT", *(["INSERT"] if topics else [])]
    subscriber = Subscriber.objects.get(email="New@example.com")
    assert subscriber.status == Subscriber.Status.PENDING
    assert subscriber.confirmation_sent_at is not None
    assert subscriber.topics() == sorted(topics)
    assert subscriber.follows_everything is (not topics)
    assert len(queued) == 1  # the confirmation email, after the commit


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("topics", [[], ["el-paso"]])
def test_outside_a_transaction_a_new_address_is_one_statement_committed_alone(client, topics):
    """No BEGIN, SAVEPOINT or COMMIT around the INSERT (the database's write
    lock is held for it alone); its follows go in one transaction with it."""
    from django.db import connection

    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql.split()[0])
        return execute(sql, params, many, context)

    data = {"email": "new@example.com", "form": "footer", "source": "/", "topics": topics}
    with connection.execute_wrapper(record):
        assert client.post("/subscribe/", data).status_code == 200
    if topics:  # SQLite's BEGIN is a statement, PostgreSQL's is the driver's
        assert [s for s in statements if s != "BEGIN"] == ["INSERT", "INSERT"]
    else:
        assert statements == ["INSERT"]
    assert Subscriber.objects.get().topics() == topics
    # A known address: its own transaction, the same page.
    assert client.post("/subscribe/", data).status_code == 200
    assert Subscriber.objects.count() == 1


@pytest.mark.django_db
def test_a_known_pending_address_takes_the_latest_choices_and_no_second_email(
    client, django_capture_on_commit_callbacks
):
    client.post("/subscribe/", {"email": "ann@example.com", "topics": ["el-paso"]})
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(
            "/subscribe/", {"email": "ann@example.com", "name": "Ann", "frequency": "daily"}
        )
    assert response.status_code == 200
    ann = Subscriber.objects.get(email="ann@example.com")
    assert (ann.name, ann.frequency, ann.topics(), ann.follows_everything) == (
        "Ann",
        "daily",
        [],
        True,
    )
    assert queued == []  # one confirmation per window
    assert Subscriber.objects.count() == 1


# Confirmation emails wait in Redis for one task that sends them
# (delivery.send_confirmations): a sign-up pushes an id, and only the one that
# finds no task on its way queues one.


def waiting():
    redis, cache = delivery._confirmations_redis()
    return [int(i) for i in redis.lrange(cache.make_key(delivery.CONFIRMATIONS), 0, -1)]


@pytest.fixture
def queued(monkeypatch):
    """The Celery tasks the sign-ups queue, by name (none is published)."""
    from subscriptions import tasks

    found = []
    for task in (tasks.send_confirmations, tasks.send_confirmation):
        monkeypatch.setattr(
            task, "apply_async", lambda args=(), *_, _name=task.name, **__: found.append(_name)
        )
    return found


def sign_up(client, *addresses):
    for i, address in enumerate(addresses):
        response = client.post("/subscribe/", {"email": address}, REMOTE_ADDR=f"10.0.3.{i}")
        assert response.status_code == 200


@pytest.mark.django_db
def test_a_burst_of_sign_ups_queues_one_task_that_confirms_each_address(
    client, smtp_server, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sign_up(client, "a@example.com", "b@example.com", "c@example.com")
    ids = list(Subscriber.objects.order_by("pk").values_list("pk", flat=True))
    assert waiting() == ids
    assert queued == ["subscriptions.tasks.send_confirmations"]

    assert delivery.send_confirmations() == 3
    assert sorted(m["To"] for m in smtp_server.wait_for(3)) == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]
    assert waiting() == []
    # The task rang the bell off: the next sign-up queues the next task.
    with django_capture_on_commit_callbacks(execute=True):
        sign_up(client, "d@example.com")
    assert queued == ["subscriptions.tasks.send_confirmations"] * 2


@pytest.mark.django_db
def test_a_mail_server_that_is_down_keeps_the_address_first_in_line(
    client, queued, settings, django_capture_on_commit_callbacks
):
    from tests.support import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nobody listens
    with django_capture_on_commit_callbacks(execute=True):
        sign_up(client, "a@example.com", "b@example.com")
    ids = waiting()
    with pytest.raises(ConnectionError):  # the task is tried again (autoretry)
        delivery.send_confirmations()
    assert waiting() == ids


@pytest.mark.django_db
def test_a_cache_that_is_not_django_redis_gets_a_task_per_sign_up(
    client, queued, monkeypatch, django_capture_on_commit_callbacks
):
    from django.core.cache import caches

    monkeypatch.setattr(delivery, "_confirmations_redis", lambda: (None, caches["default"]))
    with django_capture_on_commit_callbacks(execute=True):
        sign_up(client, "a@example.com", "b@example.com")
    assert queued == ["subscriptions.tasks.send_confirmation"] * 2


@pytest.mark.django_db
def test_the_sweeper_queues_a_task_for_confirmations_left_waiting(
    client, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sign_up(client, "a@example.com")
    assert queued == ["subscriptions.tasks.send_confirmations"]
    with django_capture_on_commit_callbacks(execute=True):
        delivery.sweep()  # the task is on its way: nothing more
    assert queued == ["subscriptions.tasks.send_confirmations"]
    # The broker lost it, and its bell expired.
    redis, cache = delivery._confirmations_redis()
    redis.delete(cache.make_key(delivery.CONFIRMATIONS_BELL))
    cache.delete("subscriptions:sweep:scheduled")  # the slow part's turn
    with django_capture_on_commit_callbacks(execute=True):
        delivery.sweep()
    assert queued == ["subscriptions.tasks.send_confirmations"] * 2
    assert waiting() == list(Subscriber.objects.values_list("pk", flat=True))


@pytest.mark.django_db
def test_a_long_line_of_confirmations_calls_in_another_worker_and_each_goes_once(
    client, smtp_server, monkeypatch, django_capture_on_commit_callbacks
):
    """A burst larger than one worker's share: the task queues one more
    before it starts, and both take from the same line, each address once.
    (The second runs here at the moment it is queued: it takes the whole
    line, the first finds it empty.)"""
    from subscriptions import tasks

    many = delivery.CONFIRMATIONS_PER_WORKER + 1
    queued = []
    monkeypatch.setattr(tasks.send_confirmations, "apply_async", lambda *a, **k: queued.append(1))
    with django_capture_on_commit_callbacks(execute=True):
        sign_up(client, *(f"r{i}@example.com" for i in range(many)))
    assert len(queued) == 1  # the bell's task
    helped = []

    def second_worker(*args, **kwargs):
        # It too finds a long line and calls for help: a third task waits
        # in the queue (not run here) and finds the line empty later.
        monkeypatch.setattr(tasks.send_confirmations, "apply_async", lambda *a, **k: None)
        helped.append(delivery.send_confirmations())

    monkeypatch.setattr(tasks.send_confirmations, "apply_async", second_worker)
    assert delivery.send_confirmations() == 0  # the second worker took them all
    assert helped == [many]
    messages = smtp_server.wait_for(many)
    assert sorted(m["To"] for m in messages) == sorted(f"r{i}@example.com" for i in range(many))
    assert waiting() == []
    # A short line: no one else is called.
    calls = []
    monkeypatch.setattr(tasks.send_confirmations, "apply_async", lambda *a, **k: calls.append(1))
    with django_capture_on_commit_callbacks(execute=True):
        sign_up(client, "late@example.com")
    assert calls == [1]  # the bell's task
    assert delivery.send_confirmations() == 1
    assert calls == [1]  # nobody else was called in


def _insert_values(email):
    now = timezone.now()
    return {
        "email": email,
        "name": "Ann",
        "status": Status.PENDING,
        "frequency": Subscriber.Frequency.DAILY,
        "follows_everything": False,
        "consent_at": now,
        "consent_wording": "Discover more. Subscribe.",
        "consent_page": "http://testserver/x/",
        "consent_ip": "10.0.0.1",
        "consent_user_agent": "Firefox",
        "confirmation_sent_at": now,
    }


@pytest.mark.django_db
def test_a_new_address_is_the_insert_create_makes_compiled_once(monkeypatch):
    """A new address's INSERT is the statement Subscriber.objects.create()
    runs, with the same values stored, but Django's compiler makes it once
    per database, not once per sign-up."""
    from django.db import connection
    from django.db.models.sql.compiler import SQLInsertCompiler

    by_create, by_signup = [], []

    def recorder(statements):
        def record(execute, sql, params, many, context):
            statements.append(sql)
            return execute(sql, params, many, context)

        return connection.execute_wrapper(record)

    with recorder(by_create):
        made = Subscriber.objects.create(**_insert_values("made@example.com"))
    with recorder(by_signup):
        signed = Subscriber.objects.all()._insert_one(**_insert_values("signed@example.com"))
    assert by_signup == by_create and by_create[0].startswith("INSERT")
    assert signed.pk and not signed._state.adding and signed._state.db == "default"
    skip = {"id", "email", "key", "consent_at", "confirmation_sent_at", "created_at"}
    stored = Subscriber.objects.values()
    made_row, signed_row = stored.get(pk=made.pk), stored.get(pk=signed.pk)
    assert {k: v for k, v in signed_row.items() if k not in skip} == {
        k: v for k, v in made_row.items() if k not in skip
    }
    assert signed_row["key"] == signed.key and len(signed.key) >= 20
    assert signed_row["created_at"] and signed_row["consent_at"] == signed.consent_at

    compiled = []
    as_sql = SQLInsertCompiler.as_sql
    monkeypatch.setattr(
        SQLInsertCompiler, "as_sql", lambda self: compiled.append(1) or as_sql(self)
    )
    for address in ["one@example.com", "two@example.com"]:
        delivery.subscribe(address, consent=CONSENT)
    assert compiled == []
    assert Subscriber.objects.filter(email__in=["one@example.com", "two@example.com"]).count() == 2


@pytest.mark.django_db
def test_a_sign_up_still_calls_pre_and_post_save_receivers_for_subscribers():
    from django.db.models.signals import post_save, pre_save

    heard = []

    def receiver(sender, instance, **kwargs):
        heard.append((kwargs.get("created"), instance.email, instance.pk))

    pre_save.connect(receiver, sender=Subscriber)
    post_save.connect(receiver, sender=Subscriber)
    try:
        subscriber = delivery.subscribe("ann@example.com", consent=CONSENT)
    finally:
        pre_save.disconnect(receiver, sender=Subscriber)
        post_save.disconnect(receiver, sender=Subscriber)
    assert heard == [
        (None, "ann@example.com", None),
        (True, "ann@example.com", subscriber.pk),
    ]
