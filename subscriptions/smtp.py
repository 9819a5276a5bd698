"""One SMTP connection sending many messages, one transaction after another,
pipelined (RFC 2920) where the server offers PIPELINING.

A Client works over an smtplib.SMTP that is already connected (Django's SMTP
backend opens it: TLS and login included). It sends each message to one
recipient and tells, per message, what happened: None (accepted), the
exception smtplib's own sendmail would have raised for it, AmbiguousSend
(the whole message went out and the connection was lost before its answer:
it may have been accepted) or NOT_TRIED (nothing of it was sent, or its
commands went out but no answer to them came back).

With PIPELINING, a message costs one round trip instead of four: MAIL FROM,
RCPT TO and DATA go in one group, and after the server's 354 the message
body goes together with the next message's MAIL FROM, RCPT TO and DATA.
DATA always ends a group (RFC 2920 section 3.1): the body never leaves
before its 354, so a refused DATA can never have a body read as commands.
The replies are read in order, each mapped back to its message. Without
PIPELINING the client waits for each reply in turn, as smtplib does.

At most one message per connection has been sent whole without its answer
read: the one whose body is in the last group sent.
"""

import re
import smtplib

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


def data_block(data):
    """A message's bytes as SMTP DATA carries them: RFC 5321 dot-stuffing,
    a final CRLF, and the terminating dot."""
    data = _DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class _Job:
    __slots__ = ("key", "address", "data", "commands")

    def __init__(self, key, address, data, commands):
        self.key, self.address, self.data, self.commands = key, address, data, commands


class Client:
    """Sends messages over one connected smtplib.SMTP `connection`, from
    `sender`. `limit()` gives the seconds the next wait for the server may
    take (None: no limit); it is applied to the socket before each write and
    read, so no wait outlasts it.

    `pipelining` says whether the server offered PIPELINING (and it is
    used); `round_trips` counts the writes whose replies the client then
    waited for (one per group of commands);
    `broken` turns true when the connection can no longer be trusted.
    """

    def __init__(self, connection, sender, limit=None):
        self.connection = connection
        self.sender = sender
        self.limit = limit or (lambda: None)
        self.broken = False
        self.round_trips = 0
        self.bound()
        connection.ehlo_or_helo_if_needed()
        self.pipelining = bool(connection.does_esmtp and connection.has_extn("pipelining"))
        self.options = " BODY=8BITMIME" if connection.has_extn("8bitmime") else ""
        self._mail = f"MAIL FROM:{smtplib.quoteaddr(sender)}{self.options}\r\n".encode("ascii")

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

        self.run(take, results.__setitem__)
        return results

    def run(self, take, report):
        """Send messages until take() returns None or the connection is lost.
        take() -> (key, address, data) or None; report(key, result) is called
        once for each message taken, as soon as its result is known."""
        if self.broken:
            raise smtplib.SMTPServerDisconnected("connection lost")
        if self.pipelining:
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
                rcpt = f"RCPT TO:{smtplib.quoteaddr(address)}\r\n".encode("ascii")
            except (UnicodeError, ValueError) as error:
                # A non-ASCII address needs SMTPUTF8, which this client does
                # not speak: smtplib raises the same UnicodeEncodeError.
                report(key, error)
                continue
            return _Job(key, address, data, (self._mail, rcpt, b"DATA\r\n"))
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
        report(first.key, error)
        for job in rest:
            report(job.key, NOT_TRIED)

    # The two ways of sending.

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
                report(job.key, error)  # before taking the next: it may stop the rest
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
                report(job.key, None if code == 250 else smtplib.SMTPDataError(code, text))
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
                report(job.key, error)
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
            report(job.key, None if code == 250 else smtplib.SMTPDataError(code, text))
