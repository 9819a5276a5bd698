"""SMTP pipelining (RFC 2920) and several connections per worker, against a
real SMTP server (aiosmtpd, told to offer PIPELINING or not) and a scripted
one that drops the connection at a chosen point."""

import smtplib
import socket
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from django.core.mail import get_connection

from subscriptions import smtp, transports
from subscriptions.models import Delivery
from tests.subscriptions.test_delivery import Post, readers, received, wait_for_done

SENDER = "Newsroom <news@example.com>"


def message(address, body="Hello.\r\n"):
    return (
        f"From: news@example.com\r\nTo: {address}\r\nSubject: Hi {address}\r\n"
        f"Message-ID: <{address}.test@example.com>\r\n\r\n{body}"
    ).encode()


def client(server, limit=None):
    connection = smtplib.SMTP(server.host, server.port, timeout=10)
    return smtp.Client(connection, SENDER, limit)


def addresses(n):
    return [f"r{i}@example.com" for i in range(n)]


@pytest.mark.parametrize("pipelining", [True, False])
def test_each_message_reaches_its_reader_once_pipelined_or_not(smtp_server, pipelining):
    smtp_server.pipelining = pipelining
    sender = client(smtp_server)
    assert sender.pipelining is pipelining
    results = sender.send([(a, message(a)) for a in addresses(5)])
    assert results == [None] * 5
    got = smtp_server.wait_for(5)
    assert [m.envelope_recipients for m in got] == [[a] for a in addresses(5)]
    if pipelining:
        # One round trip for the first MAIL/RCPT/DATA, then one per message
        # (its body with the next message's MAIL/RCPT/DATA); the server had
        # each RCPT TO before it answered the MAIL FROM in front of it.
        assert sender.round_trips == 6
        assert smtp_server.ahead == [True] * 5
    else:
        assert sender.round_trips == 4 * 5
        assert smtp_server.ahead == [False] * 5


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_refused_recipient_mid_pipeline_fails_only_that_reader(smtp_server, pipelining):
    smtp_server.pipelining = pipelining
    smtp_server.refuse["r2@example.com"] = [550, None]
    smtp_server.refuse["r3@example.com"] = [451, 1]
    results = client(smtp_server).send([(a, message(a)) for a in addresses(6)])
    assert results[:2] == [None, None] and results[4:] == [None, None]
    assert isinstance(results[2], smtplib.SMTPRecipientsRefused)
    assert results[2].recipients["r2@example.com"][0] == 550
    assert transports.classify(results[2]).refused
    assert results[3].recipients["r3@example.com"][0] == 451
    assert not transports.classify(results[3]).final  # 4xx: retried later
    got = received(smtp_server)
    assert got == Counter(
        {a: 1 for a in addresses(6) if a not in ("r2@example.com", "r3@example.com")}
    )


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_refused_message_body_fails_only_that_reader(smtp_server, pipelining):
    smtp_server.pipelining = pipelining
    smtp_server.refuse_data["r1@example.com"] = 452
    results = client(smtp_server).send([(a, message(a)) for a in addresses(3)])
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], smtplib.SMTPDataError) and results[1].smtp_code == 452
    assert set(received(smtp_server)) == {"r0@example.com", "r2@example.com"}


def test_dot_stuffing_keeps_lines_that_start_with_a_dot(smtp_server):
    body = ".\r\n..two\r\n.three\r\nlast line without an end"
    assert client(smtp_server).send([("r0@example.com", message("r0@example.com", body))]) == [None]
    got = smtp_server.wait_for(1)[0]
    assert got.get_content().replace("\r\n", "\n") == body.replace("\r\n", "\n") + "\n"


def test_an_address_smtp_cannot_carry_fails_alone(smtp_server):
    pairs = [("r0@example.com", message("r0")), ("rené@example.com", message("x"))]
    pairs.append(("r2@example.com", message("r2")))
    results = client(smtp_server).send(pairs)
    assert results[0] is None and results[2] is None
    assert transports.classify(results[1]).refused
    assert set(received(smtp_server)) == {"r0@example.com", "r2@example.com"}


class ScriptedServer:
    """A one-connection SMTP server offering PIPELINING that accepts the
    first message and drops the connection at `drop` on the second: "data"
    (after reading its MAIL/RCPT/DATA, before answering them) or "body"
    (after reading its whole body, before answering it)."""

    def __init__(self, drop):
        self.drop = drop
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.listener.getsockname()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.listener.accept()
        stream = conn.makefile("rb")
        conn.sendall(b"220 scripted ESMTP\r\n")
        transaction = []
        try:
            while line := stream.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb in (b"MAIL", b"RCPT"):
                    transaction.append(b"250 OK\r\n")
                elif verb == b"DATA":
                    if self.accepted == 1 and self.drop == "data":
                        return
                    conn.sendall(b"".join(transaction) + b"354 go on\r\n")
                    transaction = []
                    while (body := stream.readline()) != b".\r\n":
                        assert body
                    if self.accepted == 1 and self.drop == "body":
                        return
                    self.accepted += 1
                    conn.sendall(b"250 queued\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 OK\r\n")
        finally:
            conn.close()
            self.listener.close()


def test_a_connection_lost_after_a_whole_message_is_ambiguous_and_the_rest_not_tried():
    server = ScriptedServer(drop="body")
    sender = client(server)
    results = sender.send([(a, message(a)) for a in addresses(4)])
    assert results[0] is None
    assert isinstance(results[1], smtp.AmbiguousSend)
    assert transports.classify(results[1]).ambiguous
    # r2's MAIL/RCPT/DATA went with r1's body, but nothing of r2's message.
    assert results[2:] == [smtp.NOT_TRIED, smtp.NOT_TRIED]
    assert server.accepted == 1 and sender.broken


def test_a_connection_lost_before_the_body_is_not_ambiguous():
    server = ScriptedServer(drop="data")
    results = client(server).send([(a, message(a)) for a in addresses(3)])
    assert results[0] is None
    assert isinstance(results[1], smtplib.SMTPServerDisconnected)
    assert not isinstance(results[1], smtp.AmbiguousSend)
    assert transports.classify(results[1]).reconnect
    assert results[2] is smtp.NOT_TRIED


def _pairs(n):
    return [(f"r{i}@example.com", SimpleNamespace(pk=i)) for i in range(n)]


def _build(item, raw):
    from subscriptions.emails import PrebuiltEmail

    address = f"r{item.pk}@example.com"
    return PrebuiltEmail(message(address), address)


def test_several_connections_deliver_each_reader_once_results_in_order(smtp_server):
    smtp_server.refuse["r7@example.com"] = [550, None]
    sender = transports.SMTPTransport(get_connection(), connections=3)
    assert sender.batch_size == 3 * sender.DEPTH
    accepted = []
    sender.on_accepted = accepted.append
    sender.open()
    try:
        results = sender.send_many(_pairs(30), _build)
    finally:
        sender.close()
    assert [i for i, r in enumerate(results) if r is not None] == [7]
    assert results[7].recipients == {
        "r7@example.com": (550, results[7].recipients["r7@example.com"][1])
    }
    assert received(smtp_server) == Counter({f"r{i}@example.com": 1 for i in range(30) if i != 7})
    assert len(smtp_server.peers) == 3  # every connection carried some
    assert sorted(i.pk for i in accepted) == [i for i in range(30) if i != 7]
    assert all(smtp_server.ahead)


def test_a_relay_refusing_our_sender_stops_every_connection(smtp_server):
    """A refused MAIL FROM is the batch's problem: no connection starts
    another message after it."""

    sender = transports.SMTPTransport(get_connection(), connections=2)
    sender.open()
    for c in sender.clients:
        c._mail = b"MAIL FROM:<news@example.com> BODY=BOGUS\r\n"  # answered 501
    try:
        results = sender.send_many(_pairs(8), _build)
    finally:
        sender.close()
    tried = [r for r in results if r is not transports.NOT_TRIED]
    assert 1 <= len(tried) <= 2  # at most the one each connection had started
    assert all(transports.classify(r).hold for r in tried)
    assert smtp_server.messages == []


def test_a_connection_that_cannot_open_leaves_the_others_sending(smtp_server, settings):
    sender = transports.SMTPTransport(get_connection(), connections=2)
    settings.EMAIL_PORT = 1  # the second connection finds nobody there
    sender.backends[1] = get_connection()
    sender.open()
    try:
        assert sender.clients[1] is None
        assert sender.send_many(_pairs(5), _build) == [None] * 5
    finally:
        sender.close()
    assert len(received(smtp_server)) == 5


def test_no_connection_opening_is_an_error_for_open(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1
    sender = transports.SMTPTransport(get_connection(), connections=2)
    with pytest.raises(OSError):
        sender.open()


worker = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@worker
def test_a_celery_worker_delivers_a_mailing_over_pipelined_connections(celery_worker, smtp_server):
    from subscriptions import delivery

    group = readers(300)
    smtp_server.refuse[group[150].email] = [550, None]
    mailing = delivery.announce(Post())[0]
    wait_for_done(mailing)
    celery_worker.drain()
    assert received(smtp_server) == Counter({r.email: 1 for r in group if r != group[150]})
    assert Delivery.objects.get(subscriber=group[150]).status == Delivery.Status.FAILED
    # The worker's default SMTP_CONNECTIONS (4) connections, pipelined.
    assert len(smtp_server.peers) >= 4
    assert len(smtp_server.ahead) == 300 and all(smtp_server.ahead)


@pytest.mark.django_db
def test_a_hold_on_one_connection_keeps_what_the_others_sent_as_sent(
    smtp_server, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """One connection's MAIL FROM is refused (the batch's problem: held);
    the messages the other connection had delivered by then are recorded as
    sent, the rest go back to pending without spending an attempt, and
    nobody gets anything twice."""
    from tests.factories import make_subscriber
    from tests.subscriptions.test_reliability import _rows, _send_all

    settings.SUBSCRIPTIONS_SMTP_CONNECTIONS = 2
    smtp_server.delay = 0.05  # about 6 messages before the late connection starts
    opened = transports.SMTPTransport.open

    def open_with_a_refused_sender(self):
        opened(self)
        late = self.clients[1]
        late._mail = b"MAIL FROM:<news@example.com> BODY=BOGUS\r\n"  # answered 501
        run = late.run

        def run_later(take, report):
            # The other connection is mid-stream when the refusal comes: it
            # finishes the message it has in flight, a later reader's.
            time.sleep(0.3)
            run(take, report)

        late.run = run_later

    monkeypatch.setattr(transports.SMTPTransport, "open", open_with_a_refused_sender)
    for i in range(12):
        make_subscriber(f"r{i}@example.com").email_links()  # URLs resolved before the clock
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    rows = _rows(mailing)
    got = received(smtp_server)
    assert set(got.values()) <= {1}
    sent = {name for name, d in rows.items() if d.status == Delivery.Status.SENT}
    assert sent == {address.split("@")[0] for address in got}
    held = [d for d in rows.values() if d.status == Delivery.Status.PENDING]
    assert len(sent) + len(held) == 12 and held
    assert all(d.attempts == 0 and d.error.startswith("held: 501") for d in held)
    assert 3 <= len(sent) <= 10
