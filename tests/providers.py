"""Local stand-ins for email providers' send APIs, answering as the
providers document them, for the real django-anymail backends to talk to.

One threaded HTTP server on 127.0.0.1 plays:
- Mailgun: POST /v3/<domain>/messages (form fields, several `to`) → 200
  {"id", "message": "Queued. Thank you."}; a whole call with an invalid `to`
  address → 400 {"message": "'to' parameter is not a valid address. please
  check documentation"}; 401 "Forbidden" for a wrong API key.
- Postmark: POST /email (JSON) → 200 {"ErrorCode": 0, "MessageID", "To"};
  an invalid To → 422 ErrorCode 300; an inactive (bounced) address → 422
  ErrorCode 406.
Both: 429 while an address is throttled, 500 while it is broken, no answer
at all (until the test ends) for a hanging address, and a 200 that is not
JSON for a garbled one.
"""

import base64
import json
import threading
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from tests.support import free_port

MAILGUN_KEY = "key-test"
POSTMARK_TOKEN = "server-token-test"


class FakeProvider:
    def __init__(self):
        self.accepted = []  # (provider, [recipient], {field: value})
        self.calls = Counter()  # provider → API calls received
        self.invalid = set()
        self.inactive = set()
        self.throttled = Counter()  # address → 429 answers left
        self.broken = Counter()  # address → 500 answers left
        self.hanging = set()
        self.garbled = set()
        self.release = threading.Event()  # ends every hanging request
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # else each answer waits for a delayed ACK

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.startswith("/v3/") and self.path.endswith("/messages"):
                    provider.mailgun(self, body)
                elif self.path.rstrip("/") == "/email":
                    provider.postmark(self, body)
                else:
                    self.answer(404, {"message": "Not found"})

            def answer(self, status, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def recipients(self):
        return Counter(r for _, recipients, _ in self.accepted for r in recipients)

    def _trouble(self, handler, addresses):
        """Answer for the first troubled address, or return False."""
        with self.lock:
            for address in addresses:
                if address in self.hanging:
                    break
                if self.throttled[address] > 0:
                    self.throttled[address] -= 1
                    handler.answer(429, {"message": "Too many requests, slow down."})
                    return True
                if self.broken[address] > 0:
                    self.broken[address] -= 1
                    handler.answer(500, {"message": "Internal server error"})
                    return True
                if address in self.garbled:  # accepted, but the answer is garbled
                    self.accepted.append((handler.path, [address], {}))
                    handler.answer(200, b"<html>Service Unavailable</html>")
                    return True
            else:
                return False
        self.release.wait(60)  # a provider that never answers
        return True

    def mailgun(self, handler, body):
        self.calls["mailgun"] += 1
        auth = handler.headers.get("Authorization", "")
        if auth != "Basic " + base64.b64encode(f"api:{MAILGUN_KEY}".encode()).decode():
            handler.send_response(401)
            handler.end_headers()
            handler.wfile.write(b"Forbidden")
            return
        fields = _form(handler.headers.get("Content-Type", ""), body)
        recipients = [_addr_spec(t) for t in fields.get("to", [])]
        if self._trouble(handler, recipients):
            return
        if any(r in self.invalid or "@" not in r for r in recipients):
            handler.answer(
                400,
                {"message": "'to' parameter is not a valid address. please check documentation"},
            )
            return
        with self.lock:
            self.accepted.append(("mailgun", recipients, fields))
        handler.answer(
            200, {"id": f"<{uuid.uuid4().hex}@mg.example>", "message": "Queued. Thank you."}
        )

    def postmark(self, handler, body):
        self.calls["postmark"] += 1
        if handler.headers.get("X-Postmark-Server-Token") != POSTMARK_TOKEN:
            handler.answer(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
            return
        fields = json.loads(body)
        recipients = [_addr_spec(t) for t in fields["To"].split(",")]
        if self._trouble(handler, recipients):
            return
        for address in recipients:
            if address in self.invalid:
                handler.answer(
                    422, {"ErrorCode": 300, "Message": f"Invalid 'To' address: '{address}'."}
                )
                return
            if address in self.inactive:
                message = (
                    "You tried to send to a recipient that has been marked as inactive.\n"
                    f" Found inactive addresses: {address}.\n Inactive recipients are ones"
                    " that have generated a hard bounce or a spam complaint. "
                )
                handler.answer(422, {"ErrorCode": 406, "Message": message})
                return
        with self.lock:
            self.accepted.append(("postmark", recipients, fields))
        handler.answer(
            200,
            {
                "To": fields["To"],
                "SubmittedAt": "2026-12-01T00:00:00Z",
                "MessageID": str(uuid.uuid4()),
                "ErrorCode": 0,
                "Message": "OK",
            },
        )


def _addr_spec(value):
    value = value.strip()
    return value[value.rfind("<") + 1 : value.rfind(">")] if value.endswith(">") else value


def _form(content_type, body):
    """{field: [values]} of a form post, urlencoded or multipart."""
    if content_type.startswith("multipart/"):
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        fields = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields.setdefault(name, []).append(part.get_content())
        return fields
    return parse_qs(body.decode(), keep_blank_values=True)


def anymail_settings(provider, name, timeout=5):
    """(EMAIL_BACKEND, ANYMAIL) for `name` ("mailgun" or "postmark") at the fake."""
    if name == "mailgun":
        anymail = {"MAILGUN_API_KEY": MAILGUN_KEY, "MAILGUN_API_URL": f"{provider.url}/v3"}
    else:
        anymail = {"POSTMARK_SERVER_TOKEN": POSTMARK_TOKEN, "POSTMARK_API_URL": provider.url}
    anymail["REQUESTS_TIMEOUT"] = timeout
    return f"anymail.backends.{name}.EmailBackend", anymail
