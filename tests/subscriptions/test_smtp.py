"""SMTP pipelining (RFC 2920), CHUNKING (RFC 3030: a window of BDAT
messages in flight) and several connections per worker, against a real SMTP
server (aiosmtpd, told to offer PIPELINING and CHUNKING or not) and scripted
ones that drop the connection, or stop reading, at a chosen point."""

import smtplib
import socket
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from django.core.mail import get_connection
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from subscriptions import smtp, transports
from subscriptions.models import Delivery
from tests.subscriptions.test_delivery import Post, readers, received, wait_for_done

SENDER = "Newsroom <news@example.com>"

# How the server is told to speak: CHUNKING (with PIPELINING), PIPELINING
# alone, or neither (one command, one reply).
MODES = ["chunking", "pipelining", "stepwise"]


def speak(server, mode):
    server.chunking = mode == "chunking"
    server.pipelining = mode != "stepwise"


def message(address, body="Hello.\r\n"):
    return (
        f"From: news@example.com\r\nTo: {address}\r\nSubject: Hi {address}\r\n"
        f"Message-ID: <{address}.test@example.com>\r\n\r\n{body}"
    ).encode()


def client(server, limit=None, window=16):
    connection = smtplib.SMTP(server.host, server.port, timeout=10)
    return smtp.Client(connection, SENDER, limit, window=window)


def addresses(n):
    return [f"r{i}@example.com" for i in range(n)]


def each_to_its_own(server):
    """Every message went to its own reader only (never into another
    reader's envelope): the one envelope recipient is the To header's."""
    for m in server.messages:
        assert m.envelope_recipients == [m["To"]], (m["To"], m.envelope_recipients)


@pytest.mark.parametrize("mode", MODES)
def test_each_message_reaches_its_reader_once_in_every_mode(smtp_server, mode):
    speak(smtp_server, mode)
    sender = client(smtp_server)
    assert (sender.chunking, sender.pipelining) == (mode == "chunking", mode != "stepwise")
    sent = [(a, message(a)) for a in addresses(5)]
    results = sender.send(sent)
    assert results == [None] * 5
    got = smtp_server.wait_for(5)
    assert [m.envelope_recipients for m in got] == [[a] for a in addresses(5)]
    assert [m.chunked for m in got] == [mode == "chunking"] * 5
    if mode == "chunking":
        # All five in one write, nothing waited for in between; each
        # arrived exactly as it was sent.
        assert sender.round_trips == 1
        assert [m.raw for m in got] == [data for _, data in sent]
    elif mode == "pipelining":
        # One round trip for the first MAIL/RCPT/DATA, then one per message
        # (its body with the next message's MAIL/RCPT/DATA); the server had
        # each RCPT TO before it answered the MAIL FROM in front of it.
        assert sender.round_trips == 6
        assert smtp_server.ahead == [True] * 5
    else:
        assert sender.round_trips == 4 * 5
        assert smtp_server.ahead == [False] * 5


@pytest.mark.parametrize("window", [1, 2, 8])
def test_with_chunking_a_window_of_messages_goes_out_per_round_trip(smtp_server, window):
    """Half a window's messages in each write, the next half written as
    soon as the first is answered: many messages per round trip."""
    sender = client(smtp_server, window=window)
    assert sender.chunking and sender.window == window
    assert sender.send([(a, message(a)) for a in addresses(40)]) == [None] * 40
    assert [m.envelope_recipients for m in smtp_server.wait_for(40)] == [[a] for a in addresses(40)]
    group = max(1, window // 2)
    assert sender.round_trips <= 40 // group + 1


def test_a_window_is_sent_whole_before_any_reply_comes():
    """A server that answers nothing until a whole window of messages has
    come: with a window of 8, every message still goes, and is accepted."""
    server = WindowServer(wait_for=8)
    sender = client(server, limit=lambda: 5, window=8)
    assert sender.send([(a, message(a)) for a in addresses(20)]) == [None] * 20
    server.thread.join(timeout=10)
    assert server.received == [message(a) for a in addresses(20)]
    assert server.before_first_reply == 8


def test_no_window_without_chunking_or_with_a_window_of_0(smtp_server):
    assert not client(smtp_server, window=0).chunking
    smtp_server.chunking = False
    assert not client(smtp_server).chunking


@pytest.mark.parametrize("mode", MODES)
def test_refused_recipients_mid_window_fail_only_their_readers(smtp_server, mode):
    speak(smtp_server, mode)
    smtp_server.refuse["r2@example.com"] = [550, None]
    smtp_server.refuse["r3@example.com"] = [451, 1]
    smtp_server.refuse["r5@example.com"] = [452, 1]
    results = client(smtp_server).send([(a, message(a)) for a in addresses(8)])
    assert [i for i, r in enumerate(results) if r is not None] == [2, 3, 5]
    assert isinstance(results[2], smtplib.SMTPRecipientsRefused)
    assert results[2].recipients["r2@example.com"][0] == 550
    assert transports.classify(results[2]).refused
    assert results[3].recipients["r3@example.com"][0] == 451
    assert results[5].recipients["r5@example.com"][0] == 452
    for retried in (results[3], results[5]):
        assert not transports.classify(retried).final  # 4xx: retried later
    refused = {"r2@example.com", "r3@example.com", "r5@example.com"}
    assert received(smtp_server) == Counter({a: 1 for a in addresses(8) if a not in refused})
    each_to_its_own(smtp_server)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", [452, 550])
def test_a_refused_message_fails_only_that_reader(smtp_server, mode, code):
    """The server refuses one message's bytes (and, with CHUNKING, keeps
    that transaction's envelope, as a server may): the next reader's message
    still goes to that reader alone."""
    speak(smtp_server, mode)
    smtp_server.refuse_data["r1@example.com"] = code
    results = client(smtp_server).send([(a, message(a)) for a in addresses(4)])
    assert results[0] is None and results[2:] == [None, None]
    assert isinstance(results[1], smtplib.SMTPDataError) and results[1].smtp_code == code
    assert transports.classify(results[1]).final == (code >= 500)
    assert set(received(smtp_server)) == {"r0@example.com", "r2@example.com", "r3@example.com"}
    each_to_its_own(smtp_server)


def test_dot_stuffing_keeps_lines_that_start_with_a_dot(smtp_server):
    smtp_server.chunking = False  # DATA
    body = ".\r\n..two\r\n.three\r\nlast line without an end"
    assert client(smtp_server).send([("r0@example.com", message("r0@example.com", body))]) == [None]
    got = smtp_server.wait_for(1)[0]
    assert not got.chunked
    assert got.get_content().replace("\r\n", "\n") == body.replace("\r\n", "\n") + "\n"


# Whatever a message holds, BDAT carries it unchanged (no dot-stuffing, no
# added line end) and no byte of it is ever read as a command.
LINES = st.sampled_from(
    [b".", b"..", b".x", b"", b"\r\n.\r\n", b"QUIT", b"RSET", b"BDAT 3 LAST",
     b"MAIL FROM:<evil@example.org>", b"RCPT TO:<evil@example.org>", b"DATA",
     "\u00e9t\u00e9 \u2014 8bit".encode(), b"\xff\xfe\x80", b"\x00", b"\t tab", b"x" * 990]
)  # fmt: skip


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    bodies=st.lists(
        st.tuples(
            st.lists(LINES, max_size=12),
            st.sampled_from([b"\r\n", b"\n"]),
            st.sampled_from([b"", b"\r\n", b".", b"\r\n.", b"\r\n.\r\n"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_chunked_messages_arrive_byte_for_byte_whatever_they_hold(smtp_server, bodies):
    smtp_server.clear()
    sent = [
        (f"r{i}@example.com", message(f"r{i}@example.com", "") + end.join(lines) + tail)
        for i, (lines, end, tail) in enumerate(bodies)
    ]
    sender = client(smtp_server)
    assert sender.chunking
    assert sender.send(sent) == [None] * len(sent)
    got = smtp_server.wait_for(len(sent))
    assert [(m.envelope_recipients, m.raw) for m in got] == [([a], data) for a, data in sent]
    assert all(m.chunked for m in got)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    address=st.one_of(
        st.from_regex(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,12}@[A-Za-z0-9.-]{1,12}", fullmatch=True),
        st.emails(),
        st.text(max_size=30),
    )
)
def test_addresses_are_quoted_as_smtplib_quotes_them(address):
    assert smtp.quoteaddr(address) == smtplib.quoteaddr(address)


@pytest.mark.parametrize("mode", MODES)
def test_an_address_smtp_cannot_carry_fails_alone(smtp_server, mode):
    speak(smtp_server, mode)
    pairs = [("r0@example.com", message("r0")), ("rené@example.com", message("x"))]
    pairs.append(("r2@example.com", message("r2")))
    results = client(smtp_server).send(pairs)
    assert results[0] is None and results[2] is None
    assert transports.classify(results[1]).refused
    assert set(received(smtp_server)) == {"r0@example.com", "r2@example.com"}


class OneConnectionServer:
    """An SMTP server written out by hand for one connection, in a thread:
    it greets, lets `converse(conn, stream)` do the rest, then closes the
    connection and stops listening."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.listener.getsockname()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.listener.accept()
        conn.sendall(b"220 scripted ESMTP\r\n")
        try:
            self.converse(conn, conn.makefile("rb"))
        finally:
            conn.close()
            self.listener.close()


class ScriptedServer(OneConnectionServer):
    """Offers PIPELINING, accepts the first message and drops the connection
    at `drop` on the second: "data" (after reading its MAIL/RCPT/DATA,
    before answering them) or "body" (after reading its whole body, before
    answering it)."""

    def __init__(self, drop):
        self.drop = drop
        self.accepted = 0
        super().__init__()

    def converse(self, conn, stream):
        transaction = []
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


class ChunkingServer(OneConnectionServer):
    """Offers PIPELINING and CHUNKING: `answer(index, replies)` decides what
    happens to the replies to message `index` (its RSET, MAIL, RCPT and
    BDAT), once its bytes have all come: return them to send, or None to
    send nothing more and drop the connection. `received`: each message's
    bytes."""

    def __init__(self):
        self.received = []
        super().__init__()

    def answer(self, index, replies):
        return replies

    def converse(self, conn, stream):
        replies = []
        while line := stream.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-scripted\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n")
            elif verb == b"BDAT":
                self.received.append(stream.read(int(line.split()[1])))
                out = self.answer(len(self.received) - 1, [*replies, b"250 queued\r\n"])
                replies = []
                if out is None:
                    return
                conn.sendall(b"".join(out))
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:  # RSET, MAIL, RCPT: answered with their message
                replies.append(b"250 OK\r\n")


class WindowServer(ChunkingServer):
    """Answers nothing until `wait_for` messages have come; then all of it."""

    def __init__(self, wait_for):
        self.wait_for, self.held, self.before_first_reply = wait_for, [], None
        super().__init__()

    def answer(self, index, replies):
        self.held += replies
        if index + 1 < self.wait_for:
            return []
        if self.before_first_reply is None:
            self.before_first_reply = index + 1
        out, self.held = self.held, []
        return out


class DroppingServer(ChunkingServer):
    """Answers the first `answered` messages, reads `unanswered` more
    without a word, then drops the connection."""

    def __init__(self, answered, unanswered):
        self.answered, self.unanswered = answered, unanswered
        super().__init__()

    def answer(self, index, replies):
        if index < self.answered:
            return replies
        if index + 1 < self.answered + self.unanswered:
            return []
        return None


def test_a_connection_lost_mid_window_makes_what_went_whole_ambiguous_and_the_rest_not_tried():
    """Window 4: r0-r3 go at once, the server answers r0 and r1; r4 and r5
    go in their place; the connection is lost with r2-r5 unanswered.
    Accepted: r0, r1. Sent whole, maybe accepted (ambiguous, retried and
    flagged): r2-r5. Not sent (back to pending as they were): r6-r9."""
    server = DroppingServer(answered=2, unanswered=4)
    sender = client(server, window=4)
    results = sender.send([(a, message(a)) for a in addresses(10)])
    assert results[:2] == [None, None]
    assert all(isinstance(r, smtp.AmbiguousSend) for r in results[2:6]), results
    assert all(transports.classify(r).ambiguous for r in results[2:6])
    assert results[6:] == [smtp.NOT_TRIED] * 4
    assert len(server.received) == 6 and sender.broken


def test_a_refusal_read_before_the_connection_is_lost_stays_a_refusal():
    class RefusingThenDropping(ChunkingServer):
        def answer(self, index, replies):
            if index == 0:
                # RSET, MAIL and a refused RCPT answered; the BDAT never is.
                return [b"250 OK\r\n", b"250 OK\r\n", b"550 5.1.1 no such user\r\n"]
            return None

    results = client(RefusingThenDropping(), window=4).send([(a, message(a)) for a in addresses(3)])
    assert isinstance(results[0], smtplib.SMTPRecipientsRefused)
    assert transports.classify(results[0]).refused
    assert isinstance(results[1], smtp.AmbiguousSend)


def test_a_refused_recipient_stays_refused_whatever_the_server_says_to_bdat():
    """RFC 3030 has BDAT answer 5xx with no valid recipient; a server that
    answers 250 anyway has taken a message for nobody: the reader's address
    was refused, and it is not counted as sent to them."""

    class AcceptingForNobody(ChunkingServer):
        def answer(self, index, replies):
            if index == 1:
                return [b"250 OK\r\n", b"250 OK\r\n", b"550 5.1.1 no such user\r\n", replies[-1]]
            return replies

    results = client(AcceptingForNobody(), window=4).send([(a, message(a)) for a in addresses(3)])
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], smtplib.SMTPRecipientsRefused)
    assert transports.classify(results[1]).refused


class StallingServer(OneConnectionServer):
    """Greets, answers EHLO (PIPELINING, CHUNKING), then reads nothing more
    until told to (`go`): a client's writes stall once the buffers between
    them are full. Then it reads everything to the end (`data`), saying when
    what was written before has been read (`drained`: nothing came for half
    a second)."""

    def __init__(self):
        self.go, self.drained, self.data = threading.Event(), threading.Event(), b""
        super().__init__()

    def converse(self, conn, stream):
        line = b""
        while not line.endswith(b"\r\n"):
            line += conn.recv(1)
        conn.sendall(b"250-scripted\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        self.go.wait(30)
        conn.settimeout(0.5)
        while True:
            try:
                chunk = conn.recv(1 << 20)
            except TimeoutError:
                self.drained.set()
                conn.settimeout(30)
                continue
            if not chunk:
                break
            self.data += chunk


def test_a_write_cut_short_is_not_ambiguous_and_not_a_byte_follows_it(settings):
    """The server stops reading in the middle of a message: the write times
    out with that message cut short, so it cannot have been accepted (its
    reader is retried, not flagged ambiguous), the rest were not tried, and
    the connection is closed without a byte more: not even QUIT, which a
    server counting the message's bytes would take as its last ones."""
    server = StallingServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = server.host, server.port, 1
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    big = message("r0@example.com", "x" * (48 << 20))  # more than the buffers hold
    sender = transports.SMTPTransport(get_connection(), connections=1, window=4)
    sender.open()
    try:
        results = sender.send_many(
            _pairs(3),
            lambda item, raw: _prebuilt(
                big if item.pk == 0 else message(f"r{item.pk}@example.com")
            ),
        )
        server.go.set()
        server.drained.wait(30)  # room again: a QUIT now would go through
    finally:
        sender.close()
        server.go.set()
    server.thread.join(timeout=30)
    assert isinstance(results[0], smtplib.SMTPServerDisconnected)
    assert not transports.classify(results[0]).ambiguous
    assert results[1:] == [transports.NOT_TRIED] * 2
    assert server.data.startswith(b"RSET\r\nMAIL FROM:")
    assert len(server.data) < len(big)  # cut short, and nothing after it
    assert not server.data.rstrip(b"\r\n").upper().endswith(b"QUIT")
    assert not any(port == server.port for _, port, *_ in transports._kept.connections)


def _prebuilt(data):
    from subscriptions.emails import PrebuiltEmail

    return PrebuiltEmail(data, "r@example.com")


def _pairs(n):
    return [(f"r{i}@example.com", SimpleNamespace(pk=i)) for i in range(n)]


def _build(item, raw):
    from subscriptions.emails import PrebuiltEmail

    address = f"r{item.pk}@example.com"
    return PrebuiltEmail(message(address), address)


@pytest.mark.parametrize("mode", ["chunking", "pipelining"])
def test_several_connections_deliver_each_reader_once_results_in_order(smtp_server, mode):
    speak(smtp_server, mode)
    smtp_server.refuse["r7@example.com"] = [550, None]
    sender = transports.SMTPTransport(get_connection(), connections=3, window=4)
    accepted = []
    sender.on_accepted = accepted.extend
    sender.open()
    try:
        # A call gives each connection a window with CHUNKING, DEPTH
        # messages without.
        per_connection = 4 if mode == "chunking" else sender.DEPTH
        assert sender.batch_size == 3 * per_connection
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
    assert all(m.chunked == (mode == "chunking") for m in smtp_server.messages)
    each_to_its_own(smtp_server)


def _sockets(sender):
    return {b.connection.sock.getsockname() for b in sender.backends if b.connection}


def _send_and_close(connections=2, count=8):
    sender = transports.SMTPTransport(get_connection(), connections=connections, window=4)
    sender.open()
    try:
        assert sender.send_many(_pairs(count), _build) == [None] * count
        return _sockets(sender)
    finally:
        sender.close()


@pytest.mark.parametrize("fresh", [True, False])
def test_a_batch_takes_up_the_connections_the_one_before_kept_open(smtp_server, monkeypatch, fresh):
    """The next batch of the same process sends over the connections the
    last one left open, at the pace it ended at: no new connection's
    greeting and EHLO (and TLS and login); a NOOP first on one kept longer
    ago than FRESH_SECONDS."""
    if not fresh:
        monkeypatch.setattr(transports, "FRESH_SECONDS", 0)
    first = _send_and_close()
    assert len(smtp_server.sessions) == 2
    sender = transports.SMTPTransport(get_connection(), connections=2, window=4)
    sender.open()
    try:
        assert _sockets(sender) == first
        assert smtp_server.noops == (0 if fresh else 2)
        assert sender.batch_size > 2 * 4  # more than the first call of a batch
        assert sender.send_many(_pairs(8), _build) == [None] * 8
    finally:
        sender.close()
    assert len(smtp_server.sessions) == 2  # no new session said EHLO
    assert received(smtp_server) == Counter({f"r{i}@example.com": 2 for i in range(8)})


def test_a_kept_connection_the_server_has_closed_is_replaced_before_anything_is_sent(
    smtp_server,
):
    first = _send_and_close()
    smtp_server.hang_up()  # as a server does with idle sessions
    sender = transports.SMTPTransport(get_connection(), connections=2, window=4)
    sender.open()
    try:
        assert not _sockets(sender) & first
        assert sender.send_many(_pairs(8), _build) == [None] * 8  # none lost, none ambiguous
    finally:
        sender.close()
    assert received(smtp_server) == Counter({f"r{i}@example.com": 2 for i in range(8)})


def test_connections_are_kept_only_so_long(smtp_server, monkeypatch):
    first = _send_and_close()
    # Kept longer ago than KEEP_SECONDS (0 here): closed, not taken up; and
    # with KEEP_SECONDS 0 none is kept at all.
    monkeypatch.setattr(transports, "KEEP_SECONDS", 0)
    second = _send_and_close()
    assert not second & first
    assert not _send_and_close() & second


def test_a_call_takes_what_the_servers_pace_sends_in_half_a_second(smtp_server):
    """With CHUNKING, a batch's first call takes a window per connection;
    later ones what the last call's pace sends in RECHECK_SECONDS, from one
    window per connection (a slow server) up to WINDOWS of them (a fast
    one): deliver() re-checks its readers between calls."""
    sender = transports.SMTPTransport(get_connection(), connections=2, window=4)
    sender.open()
    try:
        assert sender.batch_size == 2 * 4
        assert sender.send_many(_pairs(8), _build) == [None] * 8
        assert sender.batch_size > 2 * 4  # 8 messages took less than half a second
        assert sender.batch_size <= 2 * 4 * sender.WINDOWS
        smtp_server.delay = 0.1  # 10 messages a second per connection
        assert sender.send_many(_pairs(8), _build) == [None] * 8
        assert sender.batch_size <= 10  # half a second's worth at 20 a second
        assert sender.batch_size >= 2 * 4  # never less than a window each
    finally:
        sender.close()


@pytest.mark.parametrize("mode", ["chunking", "pipelining"])
def test_a_relay_refusing_our_sender_stops_every_connection(smtp_server, mode):
    """A refused MAIL FROM is the batch's problem: no connection starts
    another message after the refusal is read; only those already in
    flight (one per connection without CHUNKING, a window with it) are
    tried."""
    speak(smtp_server, mode)
    sender = transports.SMTPTransport(get_connection(), connections=2, window=2)
    sender.open()
    for c in sender.clients:
        c._mail = b"MAIL FROM:<news@example.com> BODY=BOGUS\r\n"  # answered 501
    try:
        results = sender.send_many(_pairs(20), _build)
    finally:
        sender.close()
    tried = [r for r in results if r is not transports.NOT_TRIED]
    in_flight = 2 * (2 if mode == "chunking" else 1)  # connections x window
    assert 1 <= len(tried) <= in_flight
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
@pytest.mark.parametrize("mode", ["chunking", "pipelining"])
def test_a_celery_worker_delivers_a_mailing_over_several_connections(
    celery_worker, smtp_server, mode
):
    from subscriptions import delivery

    speak(smtp_server, mode)
    group = readers(300)
    smtp_server.refuse[group[150].email] = [550, None]
    mailing = delivery.announce(Post())[0]
    wait_for_done(mailing)
    celery_worker.drain()
    assert received(smtp_server) == Counter({r.email: 1 for r in group if r != group[150]})
    assert Delivery.objects.get(subscriber=group[150]).status == Delivery.Status.FAILED
    # The worker's default SMTP_CONNECTIONS (4) connections, pipelined, and
    # with CHUNKING every message a BDAT chunk.
    assert len(smtp_server.peers) >= 4
    assert len(smtp_server.ahead) == 300 and all(smtp_server.ahead)
    assert [m.chunked for m in smtp_server.messages] == [mode == "chunking"] * 299
    each_to_its_own(smtp_server)


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["chunking", "pipelining"])
def test_a_hold_on_one_connection_keeps_what_the_others_sent_as_sent(
    smtp_server, settings, monkeypatch, django_capture_on_commit_callbacks, mode
):
    """One connection's MAIL FROM is refused (the batch's problem: held);
    the messages the other connection had delivered by then are recorded as
    sent, the rest go back to pending without spending an attempt, and
    nobody gets anything twice."""
    from tests.factories import make_subscriber
    from tests.subscriptions.test_reliability import _rows, _send_all

    speak(smtp_server, mode)
    # Without CHUNKING a call gives each connection 8 readers (DEPTH), with
    # it a window: 8 here. The late connection starts when the first has
    # about 6 answered, and 8 more in flight at most: some readers are left.
    count = 12 if mode == "pipelining" else 40
    settings.SUBSCRIPTIONS_SMTP_WINDOW = 8
    settings.SUBSCRIPTIONS_SMTP_CONNECTIONS = 2
    smtp_server.delay = 0.05  # about 6 messages before the late connection starts
    opened = transports.SMTPTransport.open

    def open_with_a_refused_sender(self):
        opened(self)
        late = self.clients[1]
        late._mail = b"MAIL FROM:<news@example.com> BODY=BOGUS\r\n"  # answered 501
        assert late.chunking == (mode == "chunking")
        run = late.run

        def run_later(take, report):
            # The other connection is mid-stream when the refusal comes: it
            # finishes the message it has in flight, a later reader's.
            time.sleep(0.3)
            run(take, report)

        late.run = run_later

    monkeypatch.setattr(transports.SMTPTransport, "open", open_with_a_refused_sender)
    for i in range(count):
        make_subscriber(f"r{i}@example.com").email_links()  # URLs resolved before the clock
    mailing = _send_all(Post(), django_capture_on_commit_callbacks)
    rows = _rows(mailing)
    got = received(smtp_server)
    assert set(got.values()) <= {1}
    sent = {name for name, d in rows.items() if d.status == Delivery.Status.SENT}
    assert sent == {address.split("@")[0] for address in got}
    held = [d for d in rows.values() if d.status == Delivery.Status.PENDING]
    assert len(sent) + len(held) == count and held
    assert all(d.attempts == 0 and d.error.startswith("held: 501") for d in held)
    assert 3 <= len(sent) <= count - 2
