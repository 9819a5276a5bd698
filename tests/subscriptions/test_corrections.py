"""Corrections (issue 11, item 2): a note about a post that has gone out,
emailed once to exactly the readers the post reached who are still
subscribed, and shown with the post."""

import signal
from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from subscriptions import corrections_for, delivery, emails
from subscriptions.models import (
    MAX_ID,
    Correction,
    CorrectionDelivery,
    Delivery,
    Digest,
    Mailing,
    Subscriber,
)
from tests.factories import make_staff, make_subscriber
from tests.subscriptions.test_delivery import Post, in_flight, readers, received, worker
from tests.support import wait_until

F = Subscriber.Frequency
TRICKY = 'Q&A: Tom\'s "best" <picks>'


def _run(capture, *calls):
    with capture(execute=False):
        for call in calls:
            call()


def _send_post(post, capture):
    """Announce `post` and send it to its instant readers, here."""
    mailing, _ = delivery.announce(post)
    _run(
        capture,
        lambda: delivery.fan_out(mailing.pk),
        lambda: delivery.send_mailing_batch(mailing.pk, 0, MAX_ID),
    )
    mailing.refresh_from_db()
    return mailing


def _send_correction(mailing, text, capture):
    correction, created = delivery.correct(mailing, text, "chief")
    _run(
        capture,
        lambda: delivery.fan_out_correction(correction.pk),
        lambda: delivery.send_correction_batch(correction.pk, 0, MAX_ID),
    )
    correction.refresh_from_db()
    return correction, created


@pytest.mark.django_db
def test_a_correction_reaches_exactly_the_readers_who_got_the_post_once(
    smtp_server, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    got_it = make_subscriber("got-it@example.com")
    changed = make_subscriber("changed@example.com")
    leaves = make_subscriber("leaves@example.com")
    erased = make_subscriber("erased@example.com")
    suppressed = make_subscriber("suppressed@example.com")
    digest_sent = make_subscriber("digest-sent@example.com", frequency=F.DAILY)
    digest_waiting = make_subscriber("digest-waiting@example.com", frequency=F.WEEKLY)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        mailing = _send_post(Post(title=TRICKY), capture)
    # The daily reader's digest goes out the next morning; the weekly one's not yet.
    with time_machine.travel(start + timedelta(days=1, hours=8), tick=False):
        _run(capture, Digest.objects.create_due, lambda: delivery.send_digest_batch(0, MAX_ID))
    mailing.refresh_from_db()
    assert mailing.status == Mailing.Status.DONE

    smtp_server.clear()

    # Two days on, before the weekly digest.
    with time_machine.travel(start + timedelta(days=2), tick=False):
        changed.update_preferences(name="", frequency=F.DAILY, topics=[])
        leaves.unsubscribe()
        erased.erase()
        suppressed.suppress()
        make_subscriber("later@example.com", confirmed_at=timezone.now())
        correction, created = _send_correction(mailing, "The picks were Ann's, not Tom's.", capture)

    assert created and correction.status == Correction.Status.DONE
    assert received(smtp_server) == Counter(
        {got_it.email: 1, changed.email: 1, digest_sent.email: 1}
    )
    message = smtp_server.messages[0]
    assert message["Subject"] == f"Correction: {TRICKY}"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "The picks were Ann's, not Tom's." in text and TRICKY in text
    assert "&lt;picks&gt;" in html and "<picks>" not in html
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # Once: the same note again, or its tasks run again, sends nothing more.
    with time_machine.travel(start + timedelta(days=2, hours=1), tick=False):
        again, created = _send_correction(mailing, "The picks were Ann's, not Tom's.", capture)
        _run(capture, lambda: delivery.send_correction_batch(correction.pk, 0, MAX_ID))
    assert again.pk == correction.pk and not created
    assert len(smtp_server.messages) == 3
    assert CorrectionDelivery.objects.filter(status=CorrectionDelivery.Status.SENT).count() == 3

    # The weekly reader, whose digest had not gone, reads the note in it.
    with time_machine.travel(start + timedelta(days=8, hours=8), tick=False):
        _run(capture, Digest.objects.create_due, lambda: delivery.send_digest_batch(0, MAX_ID))
    (digest,) = smtp_server.to(digest_waiting.email)
    assert "Correction: The picks were Ann's, not Tom's." in digest.get_body(
        ("plain",)
    ).get_content().replace("\n", " ")
    assert (
        "Correction:</strong> The picks were Ann&#x27;s" in digest.get_body(("html",)).get_content()
    )
    assert len(smtp_server.messages) == 4


@pytest.mark.django_db
def test_a_mailing_still_sending_or_cancelled_cannot_be_corrected(
    django_capture_on_commit_callbacks,
):
    make_subscriber()
    mailing, _ = delivery.announce(Post())
    with pytest.raises(delivery.CorrectionRefused):
        delivery.correct(mailing, "Too early.")
    delivery.cancel(mailing)
    with pytest.raises(delivery.CorrectionRefused):
        delivery.correct(mailing, "Nobody got it.")
    assert not Correction.objects.exists()


@pytest.mark.django_db
def test_a_digest_batch_loads_the_notes_of_its_posts_in_one_query(
    smtp_server, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    capture = django_capture_on_commit_callbacks
    make_subscriber("instant@example.com")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        for i in range(3):
            make_subscriber(f"weekly{i}@example.com", frequency=F.WEEKLY)
        mailings = [_send_post(Post(title=f"Post {i}"), capture) for i in range(3)]
    for mailing in mailings:
        _send_correction(mailing, f"A fix to {mailing.title}.", capture)
    with time_machine.travel(start + timedelta(days=8, hours=8), tick=False):
        _run(capture, Digest.objects.create_due)
        # 15 for three posts with a note each: one query for every note
        # (per post, three posts would take 17). Three of them keep the done
        # posts' stored counts (DeliveryQuerySet.move: lock, count, move).
        with django_assert_max_num_queries(15):
            _run(capture, lambda: delivery.send_digest_batch(0, MAX_ID))
    digests = [m for m in smtp_server.messages if m["To"].startswith("weekly")]
    assert len(digests) == 3
    for message in digests:
        text = " ".join(message.get_body(("plain",)).get_content().split())
        assert all(f"Correction: A fix to Post {i}." in text for i in range(3))


@worker
def test_a_correction_goes_once_each_with_two_workers_and_a_killed_one(
    celery_worker, smtp_server, start_worker_process, settings
):
    # The sweep runs here and in the workers' view alike: a claim is a dead
    # worker's after 15 s, and a live batch stops sending well before that.
    settings.SUBSCRIPTIONS_CLAIM_TIMEOUT = 15
    claim_timeout = {"SUBSCRIPTIONS_CLAIM_TIMEOUT": "15"}
    group = readers(1500)
    # The post went to everyone earlier: its mailing and ledger are recorded
    # here (announce would have the worker send it now).
    post = Post()
    mailing = Mailing.objects.create(
        post_key=Mailing.key_for(post),
        **emails.post_snapshot(post),
        status=Mailing.Status.DONE,
        fanout_done=True,
        fanout_cursor=MAX_ID,
    )
    Delivery.objects.bulk_create(
        [
            Delivery(
                mailing=mailing,
                subscriber=r,
                status=Delivery.Status.SENT,
                sent_at=timezone.now() - timedelta(minutes=5),
            )
            for r in group
        ]
    )
    celery_worker.stop()
    try:
        doomed = start_worker_process("doomed", **claim_timeout)
        smtp_server.delay = 0.005  # so that the kill lands mid-batch
        correction, _ = delivery.correct(mailing, "The date was wrong.")
        wait_until(lambda: len(smtp_server.messages) >= 250, timeout=60, message="sending")
        doomed.stop(signal.SIGKILL)
        smtp_server.delay = 0
        assert CorrectionDelivery.objects.filter(status=CorrectionDelivery.Status.SENDING).exists()
        start_worker_process("replacement", **claim_timeout)
        start_worker_process("second", **claim_timeout)

        def done():
            delivery.sweep()  # takes back the dead worker's claim
            correction.refresh_from_db()
            return correction.status == Correction.Status.DONE

        wait_until(done, timeout=180, message="the correction to finish", interval=0.2)
    finally:
        celery_worker.start()
    celery_worker.drain()
    counts = received(smtp_server)
    assert set(counts) == {r.email for r in group}
    assert sum(counts.values()) - len(group) <= in_flight()
    assert {m["Subject"] for m in smtp_server.messages} == {f"Correction: {mailing.title}"}


# The admin form: write, preview, send.


def _correct_url(mailing):
    return f"/admin/subscriptions/mailing/{mailing.pk}/correct/"


@pytest.fixture
def sent(smtp_server, django_capture_on_commit_callbacks):
    make_subscriber("reader@example.com")
    mailing = _send_post(Post(title="Sessions visits El Paso"), django_capture_on_commit_callbacks)
    smtp_server.clear()
    return mailing


@pytest.mark.django_db
def test_an_editor_previews_then_sends_a_correction(
    sent, smtp_server, django_capture_on_commit_callbacks
):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_staff("editor", role="Editors"))
    page = client.get(f"/admin/subscriptions/mailing/{sent.pk}/change/")
    assert f'href="{_correct_url(sent)}">Send a correction' in page.content.decode()
    form = client.get(_correct_url(sent))
    assert "the <strong>1</strong> reader this post was sent to" in form.content.decode()
    token = form.cookies["csrftoken"].value
    text = "He visited on Tuesday, not Monday."

    preview = client.post(
        _correct_url(sent), {"csrfmiddlewaretoken": token, "text": text, "preview": "1"}
    )
    body = preview.content.decode()
    assert preview.status_code == 200
    assert "Correction: Sessions visits El Paso" in body
    assert "He visited on Tuesday, not Monday." in body and "srcdoc=" in body
    assert not Correction.objects.exists() and smtp_server.messages == []
    signature = preview.context["preview"]["signature"]

    # Sending without a preview, or a text other than the one previewed,
    # shows the preview instead.
    unseen = {"csrfmiddlewaretoken": token, "text": text, "send": "1"}
    assert "srcdoc=" in client.post(_correct_url(sent), unseen).content.decode()
    assert not Correction.objects.exists()
    changed = {"csrfmiddlewaretoken": token, "text": text + "!", "previewed": signature}
    assert client.post(_correct_url(sent), {**changed, "send": "1"}).status_code == 200
    assert not Correction.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            _correct_url(sent),
            {"csrfmiddlewaretoken": token, "text": text, "previewed": signature, "send": "1"},
        )
    assert response.status_code == 302
    correction = Correction.objects.get()
    assert (correction.text, correction.created_by) == (text, "editor")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Write the correction first."),
        ("   \n\t ", "Write the correction first."),
        ("x" * 1001, "A correction is at most 1000 characters (this one has 1001)"),
    ],
)
def test_the_correction_form_rejects_empty_and_oversized_text(client, sent, text, message):
    client.force_login(make_staff("editor", role="Editors"))
    response = client.post(_correct_url(sent), {"text": text, "preview": "1"})
    assert response.status_code == 400
    assert message in response.content.decode()
    response = client.post(_correct_url(sent), {"text": text, "send": "1", "previewed": "x"})
    assert response.status_code == 400
    assert not Correction.objects.exists()


@pytest.mark.django_db
def test_strangers_readers_and_staff_without_permission_cannot_send_a_correction(client, sent):
    data = {"text": "A correction.", "send": "1"}
    assert "/admin/login/" in client.post(_correct_url(sent), data)["Location"]
    client.force_login(User.objects.create_user("reader", "r@example.com", "pw-1234-x"))
    assert "/admin/login/" in client.post(_correct_url(sent), data)["Location"]
    client.force_login(make_staff("author", role="Authors"))
    assert client.post(_correct_url(sent), data).status_code == 403
    assert client.get(_correct_url(sent)).status_code == 403
    forged = Client(enforce_csrf_checks=True)
    forged.force_login(make_staff("editor", role="Editors"))
    assert forged.post(_correct_url(sent), data).status_code == 403
    assert not Correction.objects.exists()


@pytest.mark.django_db
def test_the_corrections_of_a_post_are_exposed_oldest_first(
    sent, django_capture_on_commit_callbacks
):
    post = Post()
    post.pk = int(sent.post_key.rsplit(":", 1)[1])
    for text in ("First fix.", "Second fix."):
        _send_correction(sent, text, django_capture_on_commit_callbacks)
    assert [c.text for c in corrections_for(post)] == ["First fix.", "Second fix."]


@given(text=st.text(max_size=1200))
@hyp_settings(max_examples=200, deadline=None)
def test_the_correction_form_never_fails_on_any_text(text):
    from subscriptions.forms import CorrectionForm

    form = CorrectionForm({"text": text})
    if form.is_valid():
        cleaned = form.cleaned_data["text"]
        assert cleaned and len(cleaned) <= 1000
        assert all(c.isprintable() or c == "\n" for c in cleaned)
    else:
        assert form.errors["text"]


@pytest.mark.django_db
@pytest.mark.parametrize("when", ["while the digest is out", "before the digest"])
def test_a_correction_made_while_a_digest_goes_out_still_reaches_its_reader_once(
    when, smtp_server, monkeypatch, django_capture_on_commit_callbacks
):
    """A digest reads its posts' notes, then sends. A correction made in
    between is not in it, and the correction's own fan-out leaves the
    reader out (their copy was not sent when the correction was made): the
    correction email must reach them all the same, once. Made before the
    digest read its notes, it is in the digest and no email follows."""
    from subscriptions import tasks

    capture = django_capture_on_commit_callbacks
    reader = make_subscriber("daily@example.com", frequency=F.DAILY)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        mailing = _send_post(Post(title="A post"), capture)
    assert mailing.status == Mailing.Status.DONE  # no instant reader: nothing sent yet
    made = []

    def correct():  # the editor's correction, its fan-out and batches run at once
        made.append(_send_correction(mailing, "The date was wrong.", capture)[0])

    if when == "while the digest is out":
        attach = delivery._attach_notes

        def attach_then_correct(posts):
            attach(posts)  # the digest has its notes (none)...
            correct()  # ...and the editor corrects the post now

        monkeypatch.setattr(delivery, "_attach_notes", attach_then_correct)
    queued = []
    monkeypatch.setattr(
        tasks.send_correction_batch, "apply_async", lambda args, **kwargs: queued.append(args)
    )
    with time_machine.travel(start + timedelta(days=1, hours=8), tick=False):
        if when == "before the digest":
            correct()
        _run(capture, Digest.objects.create_due)
        with capture(execute=True):  # the digest batch, and what it queues
            delivery.send_digest_batch(0, MAX_ID)
        for args in queued:
            _run(capture, lambda args=args: delivery.send_correction_batch(*args))
    (correction,) = made
    digest = smtp_server.to(reader.email)[0]
    in_digest = "The date was wrong." in digest.get_body(("plain",)).get_content()
    corrections = [m for m in smtp_server.to(reader.email) if m["Subject"].startswith("Correction")]
    assert in_digest == (when == "before the digest")
    assert len(corrections) == (0 if in_digest else 1)
    correction.refresh_from_db()
    assert correction.status == Correction.Status.DONE
    # Nothing more, however often its tasks run.
    _run(capture, lambda: delivery.send_correction_batch(correction.pk, 0, MAX_ID))
    assert len(smtp_server.to(reader.email)) == 1 + len(corrections)
