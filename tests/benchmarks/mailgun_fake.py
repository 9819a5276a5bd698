"""A lean stand-in for Mailgun's send API for throughput benchmarks, in its
own process (so it never competes with a sender for a GIL).

POST /v3/<domain>/messages, urlencoded or multipart as django-anymail sends
it: the call is parsed (every `to`, the `recipient-variables` JSON, which
must hold an object for each `to`, and %recipient.NAME% fields that must
name variables each recipient has) and answered 200 {"id", "message":
"Queued. Thank you."}, or 400 as Mailgun does for a bad call. Unlike
tests/providers.py it does not render each recipient's message: it counts.

GET /stats → JSON: calls, recipients, duplicates (an address in two
accepted calls), first/last (time.time() of the first and last accepted
call), max_recipients. POST /reset empties them.

    python tests/benchmarks/mailgun_fake.py PORT   # prints "ready" when listening
"""

import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

FIELD = re.compile(r"%recipient\.([^%]+)%")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.calls = self.recipients = self.duplicates = self.max_recipients = 0
        self.first = self.last = None
        self.seen = set()

    def add(self, addresses):
        now = time.time()
        with self.lock:
            self.calls += 1
            self.recipients += len(addresses)
            self.max_recipients = max(self.max_recipients, len(addresses))
            before = len(self.seen)
            self.seen.update(addresses)
            self.duplicates += len(addresses) - (len(self.seen) - before)
            self.first = self.first or now
            self.last = now

    def as_dict(self):
        with self.lock:
            return {
                "calls": self.calls,
                "recipients": self.recipients,
                "unique": len(self.seen),
                "duplicates": self.duplicates,
                "max_recipients": self.max_recipients,
                "first": self.first,
                "last": self.last,
            }


STATS = Stats()


def form(content_type, body):
    if content_type.startswith("multipart/"):
        return multipart(content_type, body)
    return parse_qs(body.decode(), keep_blank_values=True)


DISPOSITION = re.compile(rb'(?im)^content-disposition:[^\r\n]*\bname="([^"]*)"')


def multipart(content_type, body):
    """{field: [values]} of a multipart/form-data body, text fields in UTF-8
    (RFC 7578): split at the boundary, as a lean server would, rather than
    through the email package (slow for the 1,000 `to` parts of one call)."""
    boundary = BOUNDARY.search(content_type)
    if not boundary:
        return {}
    fields = {}
    delimiter = b"\r\n--" + boundary[1].strip('"').encode()
    for part in (b"\r\n" + body).split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.partition(b"\r\n\r\n")
        name = DISPOSITION.search(head)
        if name:
            fields.setdefault(name[1].decode(), []).append(value.decode())
    return fields


BOUNDARY = re.compile(r'boundary=("[^"]+"|[^;\s]+)')


def addr_spec(value):
    value = value.strip()
    return value[value.rfind("<") + 1 : value.rfind(">")] if value.endswith(">") else value


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' sessions use
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer(200, STATS.as_dict())

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/reset":
            STATS.reset()
            self.answer(200, {})
            return
        fields = form(self.headers.get("Content-Type", ""), body)
        to = [addr_spec(t) for t in fields.get("to", [])]
        if not to or len(to) > 1000 or any("@" not in t for t in to):
            self.answer(400, {"message": "'to' parameter is not a valid address."})
            return
        if "recipient-variables" in fields:
            variables = json.loads(fields["recipient-variables"][0])
            used = {m for values in fields.values() for v in values for m in FIELD.findall(v)}
            for address in to:
                mine = variables.get(address)
                if mine is None or not used <= set(mine):
                    self.answer(400, {"message": f"recipient-variables lack {address}"})
                    return
        STATS.add(to)
        self.answer(
            200, {"id": f"<{uuid.uuid4().hex}@mg.example>", "message": "Queued. Thank you."}
        )


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
