"""One SMTP connection sending many messages, one transaction after another,
pipelined (RFC 2920) where the server offers PIPELINING, and with a window of
messages in flight where it also offers CHUNKING (RFC 3030).

A Client works over an smtplib.SMTP that is already connected (Django's SMTP
backend opens it: TLS and login included). It sends each message to one
recipient and tells, per message, what happened: None (accepted), the
exception smtplib's own sendmail would have raised for it, AmbiguousSend
(the whole message went out and the connection was lost before its answer:
it may have been accepted) or NOT_TRIED (nothing of it was sent, or its
commands went out but no answer to them came back).

With PIPELINING and CHUNKING, a message is RSET, MAIL FROM, RCPT TO and
BDAT <size> LAST followed by its bytes, and nothing in it waits for a reply:
up to `window` messages go out back to back, and the replies, read in order,
are mapped back to their messages as they come. The server reads exactly
<size> bytes after BDAT whatever it answers (RFC 3030 section 2), so no
byte of a message can ever be read as a command, and a refused sender or
recipient only gets its BDAT an error reply. The RSET in front of each
message clears whatever a failed transaction before it left open (a server
may keep the envelope of a transaction whose BDAT it refused), so a message
can never join another reader's envelope.

With PIPELINING alone, a message costs one round trip instead of four: MAIL
FROM, RCPT TO and DATA go in one group, and after the server's 354 the
message body goes together with the next message's MAIL FROM, RCPT TO and
DATA. DATA always ends a group (RFC 2920 section 3.1): the body never leaves
before its 354, so a refused DATA can never have a body read as commands.
Without PIPELINING the client waits for each reply in turn, as smtplib does.

At most `window` messages per connection (one without CHUNKING) have been
sent whole without their answer read and reported.
"""

import contextlib
import re
import smtplib
import socket
from collections import deque

_DOT = re.compile(rb"(?m)^\.")


class AmbiguousSend(smtplib.SMTPServerDisconnected):
    """The message went out whole but its answer never came: the server may
    have accepted it. Retried (a reader may get it twice, never none) and
    counted on the row."""


class _NotTried:
    def __repr__(self):
        return "NOT_TRIED"


NOT_TRIED = _NotTried()

# What a dead or hung connection raises while we write or read.
_LOST = (OSError, smtplib.SMTPServerDisconnected)

# Addresses smtplib.quoteaddr() would only wrap in angle brackets: its
# parser (email.utils.parseaddr) costs more than the rest of a message's
# commands, and our addresses are checked ones.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+\Z")


def quoteaddr(address):
    """smtplib.quoteaddr(address), quicker for a plain address."""
    if _PLAIN_ADDRESS.match(address) and ".." not in address and not address.startswith("."):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def data_block(data):
    """A message's bytes as SMTP DATA carries them: RFC 5321 dot-stuffing,
    a final CRLF, and the terminating dot."""
    if data.startswith(b".") or b"\n." in data:
        data = _DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class _Job:
    __slots__ = ("key", "address", "data", "commands", "replies", "whole")

    def __init__(self, key, address, data, commands):
        self.key, self.address, self.data, self.commands = key, address, data, commands
        self.replies = []  # read so far (with CHUNKING)
        self.whole = False  # every byte of it handed to the network (with CHUNKING)


class Client:
    """Sends messages over one connected smtplib.SMTP `connection`, from
    `sender`. `limit()` gives the seconds the next wait for the server may
    take (None: no limit); it is applied to the socket before each write and
    read, so no wait outlasts it. `window`: the messages in flight at once
    where the server offers PIPELINING and CHUNKING (0: never use CHUNKING).

    `pipelining` and `chunking` say whether the server offered PIPELINING
    and CHUNKING (and they are used); `round_trips` counts the writes whose
    replies the client then waited for (one per group of commands);
    `broken` turns true when the connection can no longer be trusted: then
    nothing more may be written to it (a BDAT short of its last bytes would
    take any later bytes, a QUIT included, as its own).
    """

    def __init__(self, connection, sender, limit=None, window=0):
        self.connection = connection
        self.sender = sender
        self.limit = limit or (lambda: None)
        self.broken = False
        self.round_trips = 0
        self.bound()
        connection.ehlo_or_helo_if_needed()
        self.pipelining = bool(connection.does_esmtp and connection.has_extn("pipelining"))
        self.chunking = bool(self.pipelining and window and connection.has_extn("chunking"))
        self.window = max(1, int(window or 1))
        self.options = " BODY=8BITMIME" if connection.has_extn("8bitmime") else ""
        self._mail = f"MAIL FROM:{quoteaddr(sender)}{self.options}\r\n".encode("ascii")
        self._pending = b""  # bytes read and not yet a whole reply (with CHUNKING)
        if self.pipelining:
            # A group written while the one before is still unacknowledged
            # must not wait for that acknowledgement (Nagle's algorithm), which
            # a server delays while it has nothing to send back.
            with contextlib.suppress(OSError):
                connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def clean(self):
        """Whether the connection can carry more messages (a later batch's):
        not broken, and nothing read that no command asked for."""
        return not self.broken and not self._pending

    def bound(self):
        sock = self.connection.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        sock.settimeout(self.limit())

    def send(self, messages):
        """Send each (address, data) of `messages`; their results, in order."""
        results = [NOT_TRIED] * len(messages)
        jobs = iter(enumerate(messages))

        def take():
            index, (address, data) = next(jobs, (None, (None, None)))
            return None if index is None else (index, address, data)

        def report(done):
            for index, result in done:
                results[index] = result

        self.run(take, report)
        return results

    def run(self, take, report):
        """Send messages until take() returns None or the connection is lost.
        take() -> (key, address, data) or None; report([(key, result), …])
        is called with the results known together, as soon as they are
        known, once for each message taken; when it returns true, no more
        messages start."""
        if self.broken:
            raise smtplib.SMTPServerDisconnected("connection lost")
        if self.chunking:
            self._chunked(take, report)
        elif self.pipelining:
            self._pipelined(take, report)
        else:
            self._stepwise(take, report)

    # Commands and replies.

    def _take(self, take, report):
        """The next message with its commands; a message whose address
        cannot be written in a command is reported here and skipped."""
        while (job := take()) is not None:
            key, address, data = job
            try:
                if "\r" in address or "\n" in address:
                    raise ValueError("an address may not contain a line break")
                rcpt = f"RCPT TO:{quoteaddr(address)}\r\n".encode("ascii")
            except (UnicodeError, ValueError) as error:
                # A non-ASCII address needs SMTPUTF8, which this client does
                # not speak: smtplib raises the same UnicodeEncodeError.
                report([(key, error)])
                continue
            if self.chunking:
                commands = (b"RSET\r\n", self._mail, rcpt, b"BDAT %d LAST\r\n" % len(data))
            else:
                commands = (self._mail, rcpt, b"DATA\r\n")
            return _Job(key, address, data, commands)
        return None

    def _write(self, data):
        self.round_trips += 1
        self.bound()
        try:
            self.connection.sock.sendall(data)
        except OSError as error:
            self.broken = True
            raise smtplib.SMTPServerDisconnected(f"connection lost: {error}") from error

    def _reply(self):
        self.bound()
        try:
            return self.connection.getreply()
        except _LOST:
            self.broken = True
            raise
        except smtplib.SMTPException as error:  # a reply we cannot read
            self.broken = True
            raise smtplib.SMTPServerDisconnected(f"unreadable reply: {error}") from error

    def _wait(self, count):
        """The next `count` replies."""
        return [self._reply() for _ in range(count)]

    def _refusal(self, job, mail, rcpt, data):
        """The error MAIL FROM, RCPT TO and DATA's replies mean, or None."""
        if mail[0] != 250:
            return smtplib.SMTPSenderRefused(mail[0], mail[1], self.sender)
        if rcpt[0] not in (250, 251):
            return smtplib.SMTPRecipientsRefused({job.address: rcpt})
        if data[0] != 354:
            return smtplib.SMTPDataError(*data)
        return None

    def _lost(self, report, error, *jobs):
        """The connection died: the first job gets the error (its reader is
        retried), the others were not tried."""
        self.broken = True
        first, *rest = [job for job in jobs if job is not None]
        report([(first.key, error)] + [(job.key, NOT_TRIED) for job in rest])

    # The three ways of sending.

    def _chunked(self, take, report):
        """Messages as BDAT chunks, up to `window` in flight: they go in
        groups of half a window, each written in one go as soon as there is
        room for it, and the replies are read as they come."""
        flight = deque()  # sent (or being sent) and not yet answered, oldest first
        group = max(1, self.window // 2)
        more = True
        while True:
            if more and self.window - len(flight) >= group:
                jobs = []
                while len(jobs) < group and (job := self._take(take, report)) is not None:
                    jobs.append(job)
                more = len(jobs) == group
                if jobs:
                    flight.extend(jobs)
                    try:
                        self._write_whole(jobs)
                    except _LOST as error:
                        self._lost_in_flight(report, error, flight)
                        return
                continue
            if not flight:
                return
            done = []
            try:
                for reply in self._replies():
                    if not flight:
                        raise smtplib.SMTPServerDisconnected(f"a reply to nothing: {reply!r}")
                    job = flight[0]
                    job.replies.append(reply)
                    if len(job.replies) == 4:
                        done.append((flight.popleft().key, self._chunk_result(job)))
            except _LOST as error:
                if done:
                    report(done)
                self._lost_in_flight(report, error, flight)
                return
            # report() returns true when no more messages may start (the
            # batch is held); a connection that cannot be trusted starts none.
            if (done and report(done)) or self.broken:
                more = False

    def _write_whole(self, jobs):
        """Write the jobs' commands and bytes in one go; each job's `whole`
        tells whether all of its bytes left, even if the write fails."""
        parts, ends, size = [], [], 0
        for job in jobs:
            parts += job.commands
            parts.append(job.data)
            size += sum(map(len, job.commands)) + len(job.data)
            ends.append(size)
        data = memoryview(b"".join(parts))
        self.round_trips += 1
        sent = 0
        try:
            while sent < size:
                self.bound()
                sent += self.connection.sock.send(data[sent:])
        except OSError as error:
            self.broken = True
            raise smtplib.SMTPServerDisconnected(f"connection lost: {error}") from error
        finally:
            for job, end in zip(jobs, ends, strict=True):
                job.whole = end <= sent

    def _replies(self):
        """The replies that have come: at least one (waited for within
        limit()), and all the others already read whole."""
        file = self.connection.file
        if file is None:
            file = self.connection.file = self.connection.sock.makefile("rb")
        while True:
            self.bound()
            try:
                data = file.read1(65536)
            except OSError as error:
                self.broken = True
                raise smtplib.SMTPServerDisconnected(f"connection lost: {error}") from error
            if not data:
                self.broken = True
                raise smtplib.SMTPServerDisconnected("connection closed by the server")
            self._pending += data
            if replies := self._parse():
                return replies

    def _parse(self):
        """The whole replies at the front of what was read, as (code, text)
        the way smtplib.SMTP.getreply() gives them; taken off it."""
        data, replies, lines, start, taken = self._pending, [], [], 0, 0
        while (end := data.find(b"\n", start)) >= 0:
            line = data[start:end]
            start = end + 1
            if not line[:3].isdigit():
                self.broken = True
                raise smtplib.SMTPServerDisconnected(f"unreadable reply: {line[:100]!r}")
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                replies.append((int(line[:3]), b"\n".join(lines)))
                lines, taken = [], start
        self._pending = data[taken:]
        if len(self._pending) > 65536:  # no reply is that long
            self.broken = True
            raise smtplib.SMTPServerDisconnected("unreadable reply: too long")
        return replies

    def _chunk_result(self, job):
        """The result RSET, MAIL FROM, RCPT TO and BDAT's replies mean, read
        in order: a refused sender or recipient is refused even if a server
        then answers 250 to BDAT (RFC 3030 has it refuse a message with no
        valid recipient; one that takes it anyway has taken it for nobody)."""
        rset, mail, rcpt, bdat = job.replies
        if rset[0] != 250:
            self.broken = True  # Nothing said after it can be trusted.
            return smtplib.SMTPResponseException(*rset)
        if mail[0] != 250:
            return smtplib.SMTPSenderRefused(mail[0], mail[1], self.sender)
        if rcpt[0] not in (250, 251):
            return smtplib.SMTPRecipientsRefused({job.address: rcpt})
        if bdat[0] == 250:
            return None
        return smtplib.SMTPDataError(*bdat)

    def _lost_in_flight(self, report, error, flight):
        """The connection died with `flight` unanswered: a message refused
        by the replies read so far was refused; one sent whole may have been
        accepted (ambiguous); the first other one gets the error (its reader
        is retried), and the rest were not tried."""
        self.broken = True
        results, first = [], True
        for job in flight:
            # Replies not read count as 250 here: only those read can refuse.
            _, mail, rcpt = (job.replies + [(250, b"")] * 3)[:3]
            if mail[0] != 250:
                result = smtplib.SMTPSenderRefused(mail[0], mail[1], self.sender)
            elif rcpt[0] not in (250, 251):
                result = smtplib.SMTPRecipientsRefused({job.address: rcpt})
            elif job.whole:
                result = AmbiguousSend(f"connection lost after the message was sent: {error}")
                first = False
            else:
                result = error if first else NOT_TRIED
                first = False
            results.append((job.key, result))
        if results:
            report(results)

    def _pipelined(self, take, report):
        job = self._take(take, report)
        if job is None:
            return
        out = b"".join(job.commands)
        while job is not None:
            # `out` ends with job's MAIL FROM, RCPT TO and DATA: the replies
            # read next are theirs.
            try:
                if out:
                    self._write(out)
                mail, rcpt, data = self._wait(3)
            except _LOST as error:
                self._lost(report, error, job)
                return
            error = self._refusal(job, mail, rcpt, data)
            if error is not None:
                report([(job.key, error)])  # before taking the next: it may stop the rest
            following = self._take(take, report)
            if error is None:
                out = data_block(job.data) + (b"".join(following.commands) if following else b"")
                try:
                    self._write(out)
                except _LOST as lost:
                    # The message did not go out whole: not accepted.
                    self._lost(report, lost, job, following)
                    return
                try:
                    code, text = self._wait(1)[0]
                except _LOST as lost:
                    ambiguous = AmbiguousSend(f"connection lost after the message was sent: {lost}")
                    self._lost(report, ambiguous, job, following)
                    return
                report([(job.key, None if code == 250 else smtplib.SMTPDataError(code, text))])
                out = b""
            else:
                # The transaction stopped before its body. A server that
                # answered DATA with 354 all the same gets an empty message
                # ended at once; then RSET clears the transaction (a refused
                # RCPT leaves it open) before the next message's commands.
                prefix = b".\r\n" if data[0] == 354 else b""
                tail = b"".join(following.commands) if following else b""
                try:
                    self._write(prefix + b"RSET\r\n" + tail)
                    self._wait(2 if prefix else 1)
                except _LOST as lost:
                    if following is not None:
                        self._lost(report, lost, following)
                    self.broken = True
                    return
                out = b""
            job = following

    def _stepwise(self, take, report):
        while (job := self._take(take, report)) is not None:
            try:
                replies = []
                for command in job.commands:
                    self._write(command)
                    replies.append(self._wait(1)[0])
                    if replies[-1][0] not in (250, 251, 354):
                        break
            except _LOST as error:
                self._lost(report, error, job)
                return
            mail, rcpt, data = (replies + [(503, b"not sent")] * 3)[:3]
            error = self._refusal(job, mail, rcpt, data)
            if error is not None:
                report([(job.key, error)])
                try:
                    self._write(b"RSET\r\n")
                    self._wait(1)
                except _LOST:
                    self.broken = True
                    return
                continue
            try:
                self._write(data_block(job.data))
            except _LOST as error:
                self._lost(report, error, job)
                return
            try:
                code, text = self._wait(1)[0]
            except _LOST as error:
                ambiguous = AmbiguousSend(f"connection lost after the message was sent: {error}")
                self._lost(report, ambiguous, job)
                return
            report([(job.key, None if code == 250 else smtplib.SMTPDataError(code, text))])
