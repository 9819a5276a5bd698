"""A fast SMTP sink for throughput benchmarks: accepts every message and counts.

aiosmtpd costs ~0.7 ms of CPU per message, more than the senders being
measured, so benchmarks use this small asyncio responder instead. It speaks
enough ESMTP for smtplib and Django's SMTP backend: EHLO/HELO (advertising
8BITMIME, PIPELINING, SIZE and, unless told not to, CHUNKING), MAIL, RCPT,
DATA (with dot-unstuffing), BDAT (RFC 3030: exactly the bytes it announces),
RSET, NOOP and QUIT, and answers 250 to everything well formed. It keeps
nothing but counters:

- ``messages``: transactions accepted (DATA or BDAT LAST); ``recipients``:
  their RCPT TOs; ``chunked``: how many of the messages came by BDAT;
- ``duplicates``: a recipient receiving the same message twice, the message
  being its Message-ID header, or its Subject when it has none;
- ``first``/``last``: wall-clock times (``time.time()``) of the first and
  last accepted message, so other processes can compare them with their own;
- ``bytes``: the size of the accepted messages (after unstuffing);
- ``connections``: SMTP connections opened.

With ``latency`` (seconds), every reply leaves that long after the command
it answers arrived (for DATA and BDAT: after the message's last byte), in
order: a relay that far away (a round trip of ``latency``), pipelined
commands answered together, whether the message came by DATA or by BDAT.

It runs in its own process so it never competes with a sender for a GIL;
``SmtpSink`` starts it, in its own process group, and talks to it over a
control socket (one line in, one JSON line out: ``STATS``, ``RESET``)::

    with SmtpSink() as sink:          # sink.port is the SMTP port on 127.0.0.1
        sink.reset()
        ...send n messages...
        stats = sink.wait_for(n, timeout=60)

Standalone: ``python tests/benchmarks/smtp_sink.py --port 2525`` runs it in
the foreground; ``printf 'STATS\\n' | nc 127.0.0.1 CONTROL_PORT`` reads it.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HEADER_RE = {
    name: re.compile(rb"^" + name + rb":[ \t]*(.*(?:\r\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
    for name in (b"message-id", b"subject")
}


class Counters:
    def __init__(self):
        self.reset()

    def reset(self):
        self.messages = 0
        self.chunked = 0
        self.recipients = 0
        self.duplicates = 0
        self.bytes = 0
        self.connections = 0
        self.first = None
        self.last = None
        self.seen = set()

    def accept(self, recipients, data, chunked=False):
        now = time.time()
        self.chunked += chunked
        if self.first is None:
            self.first = now
        self.last = now
        self.messages += 1
        self.recipients += len(recipients)
        self.bytes += len(data)
        headers = data.split(b"\r\n\r\n", 1)[0]
        found = HEADER_RE[b"message-id"].search(headers) or HEADER_RE[b"subject"].search(headers)
        key = found.group(1).strip() if found else b""
        for recipient in recipients:
            if (recipient, key) in self.seen:
                self.duplicates += 1
            else:
                self.seen.add((recipient, key))

    def as_dict(self):
        return {
            "messages": self.messages,
            "chunked": self.chunked,
            "recipients": self.recipients,
            "duplicates": self.duplicates,
            "bytes": self.bytes,
            "connections": self.connections,
            "first": self.first,
            "last": self.last,
        }


class SmtpProtocol(asyncio.Protocol):
    """One SMTP session. Commands are parsed line by line from the buffer
    (pipelined commands included); in DATA the buffer is searched for the
    terminating dot in one go, and a BDAT chunk is taken whole by its
    length, which keeps the cost per message small."""

    def __init__(self, counters, latency=0.0, chunking=True):
        self.counters = counters
        self.latency = latency
        self.chunking = chunking
        self.buffer = b""
        self.in_data = False
        self.chunk = None  # in a BDAT: (bytes still to come, LAST?)
        self.parts = []  # a BDAT message's chunks before its LAST
        self.recipients = []
        self.outbox = []  # (due, bytes or None to close), in order: replies held back

    def connection_made(self, transport):
        self.transport = transport
        self.counters.connections += 1
        self.write(b"220 127.0.0.1 benchmark sink ESMTP\r\n")

    def write(self, data, close=False):
        """Send `data` (then close) now, or `latency` seconds from now: a
        server that far away. Replies keep their order."""
        if not self.latency:
            self.transport.write(data)
            if close:
                self.transport.close()
            return
        loop = asyncio.get_running_loop()
        self.outbox.append((loop.time() + self.latency, data, close))
        if len(self.outbox) == 1:
            loop.call_at(self.outbox[0][0], self.flush)

    def flush(self):
        loop = asyncio.get_running_loop()
        while self.outbox and self.outbox[0][0] <= loop.time():
            _, data, close = self.outbox.pop(0)
            if not self.transport.is_closing():
                self.transport.write(data)
                if close:
                    self.transport.close()
        if self.outbox:
            loop.call_at(self.outbox[0][0], self.flush)

    def data_received(self, data):
        self.buffer += data
        replies = []
        while True:
            if self.chunk is not None:
                left, last = self.chunk
                part = self.buffer[:left]
                self.buffer = self.buffer[left:]
                self.parts.append(part)
                if len(part) < left:
                    self.chunk = (left - len(part), last)
                    break
                self.chunk = None
                replies.append(self.chunk_end(last))
                continue
            if self.in_data:
                # The body so far starts with "\r\n" for the search, since the
                # terminator may be the very first line of an empty message.
                end = (b"\r\n" + self.buffer).find(b"\r\n.\r\n")
                if end < 0:
                    break
                body = (b"\r\n" + self.buffer)[2 : end + 2]
                self.buffer = self.buffer[end + 3 :]
                body = body.replace(b"\r\n..", b"\r\n.")
                if body.startswith(b".."):
                    body = body[1:]
                self.counters.accept(self.recipients, body)
                self.in_data = False
                self.recipients = []
                replies.append(b"250 OK queued\r\n")
                continue
            line, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                line, sep, rest = self.buffer.partition(b"\n")
                if not sep:
                    break
            self.buffer = rest
            reply = self.command(line)
            if reply is None:  # a BDAT: its bytes come next
                continue
            replies.append(reply)
            if reply.startswith(b"221"):
                self.write(b"".join(replies), close=True)
                return
        if replies:
            self.write(b"".join(replies))

    def chunk_end(self, last):
        """The reply to a BDAT whose bytes have all come."""
        if not last:
            return b"250 OK chunk\r\n"
        body, self.parts = b"".join(self.parts), []
        if not self.recipients:
            # RFC 3030: the chunk is read all the same, and refused.
            return b"554 No valid recipients\r\n"
        self.counters.accept(self.recipients, body, chunked=True)
        self.recipients = []
        return b"250 OK queued\r\n"

    def command(self, line):
        verb = line[:4].upper()
        if verb == b"EHLO":
            chunking = b"250-CHUNKING\r\n" if self.chunking else b""
            return (
                b"250-127.0.0.1\r\n250-8BITMIME\r\n250-PIPELINING\r\n"
                + chunking
                + b"250 SIZE 104857600\r\n"
            )
        if verb == b"BDAT" and self.chunking:
            size, _, last = line[5:].strip().partition(b" ")
            if not size.isdigit() or last.upper() not in (b"", b"LAST"):
                return b"501 Syntax: BDAT size [LAST]\r\n"
            self.chunk = (int(size), bool(last))
            return None  # answered when its bytes have come
        if verb == b"HELO":
            return b"250 127.0.0.1\r\n"
        if verb == b"MAIL":
            self.recipients = []
            return b"250 OK\r\n"
        if verb == b"RCPT":
            address = line.partition(b":")[2].strip().split(b" ")[0].strip(b"<>").lower()
            self.recipients.append(address)
            return b"250 OK\r\n"
        if verb == b"DATA":
            if not self.recipients:
                return b"503 Need RCPT first\r\n"
            self.in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb == b"RSET":
            self.recipients, self.parts = [], []
            return b"250 OK\r\n"
        if verb == b"NOOP":
            return b"250 OK\r\n"
        if verb == b"QUIT":
            return b"221 Bye\r\n"
        return b"502 Command not implemented\r\n"


async def control(counters, reader, writer):
    """One line in (STATS or RESET), one JSON line out."""
    line = (await reader.readline()).strip().upper()
    if line == b"RESET":
        counters.reset()
    writer.write(json.dumps(counters.as_dict()).encode() + b"\n")
    await writer.drain()
    writer.close()


async def serve(port, control_port, latency=0.0, chunking=True):
    counters = Counters()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: SmtpProtocol(counters, latency, chunking), "127.0.0.1", port, backlog=512
    )
    ctl = await asyncio.start_server(
        lambda r, w: control(counters, r, w), "127.0.0.1", control_port
    )
    smtp_port = smtp.sockets[0].getsockname()[1]
    ctl_port = ctl.sockets[0].getsockname()[1]
    print(f"ready smtp={smtp_port} control={ctl_port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


class SmtpSink:
    """The sink in a child process (its own process group); counters through
    the control socket. ``stats()``, ``reset()``, ``wait_for(n)``, ``stop()``."""

    def __init__(self, port=0, latency=0.0, chunking=True):
        self.requested_port = port
        self.latency = latency
        self.chunking = chunking
        self.process = None
        self.port = None
        self.control_port = None

    def start(self):
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--port",
                str(self.requested_port),
                "--latency",
                str(self.latency),
                *([] if self.chunking else ["--no-chunking"]),
            ],
            stdout=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        line = self.process.stdout.readline()
        match = re.match(r"ready smtp=(\d+) control=(\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"SMTP sink did not start: {line!r}")
        self.port, self.control_port = int(match[1]), int(match[2])
        return self

    @classmethod
    def attach(cls, control_port):
        """A handle on a sink another process started (stats, reset, wait_for)."""
        sink = cls()
        sink.control_port = control_port
        return sink

    def _ask(self, command):
        import socket

        with socket.create_connection(("127.0.0.1", self.control_port), timeout=10) as s:
            s.sendall(command + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def stats(self):
        return self._ask(b"STATS")

    def reset(self):
        return self._ask(b"RESET")

    def wait_for(self, count, timeout=120, interval=0.05):
        """Poll until `count` messages arrived or `timeout` passed; the stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["messages"] >= count or time.monotonic() > deadline:
                return stats
            time.sleep(interval)

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process and self.process.stdout:
            self.process.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="SMTP port (0: any free port)")
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds each reply is held back"
    )
    parser.add_argument("--no-chunking", action="store_true", help="do not offer CHUNKING (BDAT)")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.control_port, args.latency, not args.no_chunking))


if __name__ == "__main__":
    main()
