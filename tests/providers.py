"""Local stand-ins for email providers' send APIs, answering as the
providers document them, for the real django-anymail backends to talk to.

One threaded HTTP server on 127.0.0.1 plays:
- Mailgun: POST /v3/<domain>/messages (form fields, several `to`) → 200
  {"id", "message": "Queued. Thank you."}; a whole call with an invalid `to`
  address → 400 {"message": "'to' parameter is not a valid address. please
  check documentation"}; 401 "Forbidden" for a wrong API key; more than
  1,000 `to` → 400. Batch sending: `recipient-variables` (JSON, one object
  per recipient) fill each %recipient.NAME% of each field for that
  recipient (h:Name headers and v:name variables too).
- Postmark: POST /email (JSON) → 200 {"ErrorCode": 0, "MessageID", "To"};
  an invalid To → 422 ErrorCode 300; an inactive (bounced) address → 422
  ErrorCode 406. POST /email/batch (a JSON list of at most 500 messages)
  → 200 with one answer per message, in order: ErrorCode 0, 300 or 406.
- SparkPost: POST /api/v1/transmissions/ (JSON: recipients, each with its
  substitution_data; content with {{name}} / {{{name}}} fields) → 200
  {"results": {"total_accepted_recipients", "total_rejected_recipients",
  "id"}}, an inactive (suppressed) address counted as rejected; a malformed
  address → 422 for the whole call.
All: 429 while an address is throttled, 500 while it is broken (503 while
it is unavailable), no answer at all (until the test ends) for a hanging
address, and a 200 that is not JSON for a garbled one — for the whole call
that carries the address.

`accepted` holds one entry per message a recipient would get, its fields
as that recipient's message has them (merge fields filled in); `batches`
the number of recipients of each accepted call; `variables` each Mailgun
call's recipient-variables.
"""

import base64
import html
import json
import re
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
SPARKPOST_KEY = "sparkpost-key-test"
MAILGUN_MAX, POSTMARK_MAX = 1000, 500


class FakeProvider:
    def __init__(self):
        self.accepted = []  # (provider, [recipient], {field: value})
        self.batches = []  # (provider, recipients in one accepted call)
        self.variables = []  # each accepted Mailgun call's recipient-variables, parsed
        self.calls = Counter()  # provider → API calls received
        self.unavailable = Counter()  # address → 503 answers left
        self.on_call = None  # called with (provider, [recipient]) before answering
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
                elif self.path.rstrip("/") == "/email/batch":
                    provider.postmark_batch(self, body)
                elif self.path.rstrip("/") == "/api/v1/transmissions":
                    provider.sparkpost(self, body)
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
                if self.unavailable[address] > 0:
                    self.unavailable[address] -= 1
                    handler.answer(503, {"message": "Service Unavailable"})
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
        auth = handler.headers.get("Authorization", "")
        if auth != "Basic " + base64.b64encode(f"api:{MAILGUN_KEY}".encode()).decode():
            self.calls["mailgun"] += 1
            handler.send_response(401)
            handler.end_headers()
            handler.wfile.write(b"Forbidden")
            return
        fields = _form(handler.headers.get("Content-Type", ""), body)
        recipients = [_addr_spec(t) for t in fields.get("to", [])]
        self._called("mailgun", recipients)
        if self._trouble(handler, recipients):
            return
        if len(recipients) > MAILGUN_MAX:
            handler.answer(400, {"message": "Too many recipients"})
            return
        if any(r in self.invalid or "@" not in r for r in recipients):
            handler.answer(
                400,
                {"message": "'to' parameter is not a valid address. please check documentation"},
            )
            return
        variables = fields.pop("recipient-variables", None)
        if variables is None:
            messages = [(recipients, fields)]
        else:
            # Batch sending: one message per recipient, only them in `to`.
            variables = json.loads(variables[0])
            with self.lock:
                self.variables.append(variables)
            messages = []
            for to, recipient in zip(fields["to"], recipients, strict=True):
                mine = variables.get(recipient, {})

                def fill(value, mine=mine):
                    return re.sub(
                        r"%recipient\.([^%]+)%", lambda m: str(mine.get(m.group(1), "")), value
                    )

                one = {k: [fill(v) for v in values] for k, values in fields.items() if k != "to"}
                messages.append(([recipient], {**one, "to": [to]}))
        with self.lock:
            self.accepted += [("mailgun", r, f) for r, f in messages]
            self.batches.append(("mailgun", len(recipients)))
        handler.answer(
            200, {"id": f"<{uuid.uuid4().hex}@mg.example>", "message": "Queued. Thank you."}
        )

    def _called(self, name, recipients):
        with self.lock:
            self.calls[name] += 1
        if self.on_call:
            self.on_call(name, recipients)

    def _auth_postmark(self, handler):
        if handler.headers.get("X-Postmark-Server-Token") != POSTMARK_TOKEN:
            handler.answer(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
            return False
        return True

    def postmark_batch(self, handler, body):
        if not self._auth_postmark(handler):
            self.calls["postmark"] += 1
            return
        messages = json.loads(body)
        recipients = [_addr_spec(m["To"]) for m in messages]
        self._called("postmark", recipients)
        if self._trouble(handler, recipients):
            return
        if len(messages) > POSTMARK_MAX:
            handler.answer(
                422, {"ErrorCode": 300, "Message": "Batch may not hold more than 500 messages."}
            )
            return
        answers, accepted = [], []
        for message, address in zip(messages, recipients, strict=True):
            if address in self.invalid or "@" not in address:
                answers.append({"ErrorCode": 300, "Message": f"Invalid 'To' address: '{address}'."})
            elif address in self.inactive:
                answers.append(
                    {
                        "ErrorCode": 406,
                        "Message": "You tried to send to a recipient that has been marked"
                        f" as inactive.\n Found inactive addresses: {address}.\n Inactive"
                        " recipients are ones that have generated a hard bounce or a spam"
                        " complaint. ",
                    }
                )
            else:
                accepted.append(("postmark", [address], message))
                answers.append(
                    {
                        "To": message["To"],
                        "SubmittedAt": "2026-12-01T00:00:00Z",
                        "MessageID": str(uuid.uuid4()),
                        "ErrorCode": 0,
                        "Message": "OK",
                    }
                )
        with self.lock:
            self.accepted += accepted
            self.batches.append(("postmark", len(accepted)))
        handler.answer(200, answers)

    def sparkpost(self, handler, body):
        if handler.headers.get("Authorization") != SPARKPOST_KEY:
            self.calls["sparkpost"] += 1
            handler.answer(401, {"errors": [{"message": "Unauthorized."}]})
            return
        data = json.loads(body)
        recipients = [r["address"]["email"] for r in data["recipients"]]
        self._called("sparkpost", recipients)
        if self._trouble(handler, recipients):
            return
        bad = next((r for r in recipients if r in self.invalid or "@" not in r), None)
        if bad is not None:
            description = f"Invalid recipient address.email: {bad}"
            handler.answer(
                422,
                {
                    "errors": [
                        {
                            "message": "invalid data format/type",
                            "description": description,
                            "code": "1300",
                        }
                    ]
                },
            )
            return
        content = data["content"]
        accepted = []
        for recipient in data["recipients"]:
            address = recipient["address"]["email"]
            if address in self.inactive:
                continue
            values = {**data.get("substitution_data", {}), **recipient.get("substitution_data", {})}

            def fill(value, values=values, escape=False):
                value = re.sub(
                    r"\{\{\{\s*(\w+)\s*\}\}\}", lambda m: str(values.get(m.group(1), "")), value
                )
                return re.sub(
                    r"\{\{\s*(\w+)\s*\}\}",
                    lambda m: (html.escape if escape else str)(str(values.get(m.group(1), ""))),
                    value,
                )

            fields = {
                "to": recipient["address"].get("header_to", address),
                "subject": fill(content.get("subject", "")),
                "text": fill(content.get("text", "")),
                "html": fill(content.get("html", ""), escape=True),
                "headers": {k: fill(v) for k, v in content.get("headers", {}).items()},
                "metadata": recipient.get("metadata", {}),
            }
            accepted.append(("sparkpost", [address], fields))
        with self.lock:
            self.accepted += accepted
            self.batches.append(("sparkpost", len(accepted)))
        handler.answer(
            200,
            {
                "results": {
                    "total_rejected_recipients": len(recipients) - len(accepted),
                    "total_accepted_recipients": len(accepted),
                    "id": str(uuid.uuid4().int)[:18],
                }
            },
        )

    def postmark(self, handler, body):
        if not self._auth_postmark(handler):
            self.calls["postmark"] += 1
            return
        fields = json.loads(body)
        recipients = [_addr_spec(t) for t in fields["To"].split(",")]
        self._called("postmark", recipients)
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
            fields.setdefault(name, []).append(_value(part))
        return fields
    return parse_qs(body.decode(), keep_blank_values=True)


def _value(part):
    """A form field's value: a text field without a charset is UTF-8, as
    RFC 7578 (4.5) has it and as requests and urllib3 send them."""
    if part.get_filename() is not None or part.get("Content-Type"):
        return part.get_content()
    return part.get_payload(decode=True).decode()


def anymail_settings(provider, name, timeout=5):
    """(EMAIL_BACKEND, ANYMAIL) for `name` ("mailgun", "postmark" or
    "sparkpost") at the fake."""
    if name == "mailgun":
        anymail = {"MAILGUN_API_KEY": MAILGUN_KEY, "MAILGUN_API_URL": f"{provider.url}/v3"}
    elif name == "sparkpost":
        anymail = {
            "SPARKPOST_API_KEY": SPARKPOST_KEY,
            "SPARKPOST_API_URL": f"{provider.url}/api/v1",
        }
    else:
        anymail = {"POSTMARK_SERVER_TOKEN": POSTMARK_TOKEN, "POSTMARK_API_URL": provider.url}
    anymail["REQUESTS_TIMEOUT"] = timeout
    return f"anymail.backends.{name}.EmailBackend", anymail
