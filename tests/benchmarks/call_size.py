"""Each reader's share of a Mailgun batch call, as the checkout this runs in
builds it: bytes of recipient-variables and of the whole form per reader
of one 1,000-reader call, the names each reader carries, and (--cpu) the
process time to make and serialize that call — each reader's values,
MessageTemplate.for_readers, anymail's payload, the form — median of 15.

Run from the checkout to measure (its code is imported from the working
directory, so one copy of this file measures any commit):

    cd /work/wt-base && SECRET_KEY=x .venv/bin/python /path/to/call_size.py --cpu
"""

import json
import os
import secrets
import statistics
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newsroom.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.mail import get_connection  # noqa: E402

from subscriptions import emails, providers  # noqa: E402
from subscriptions.models import Subscriber  # noqa: E402

N = 1000


def call(mailing, people, metadata, connection, provider):
    """The call's payload: each reader's values, the batch message, the form."""
    build = emails.post(mailing)
    readers = [(s, build.values(SimpleNamespace(subscriber=s, subscriber_id=s.pk))) for s in people]
    # Before 2026-12-02's fifth session, for_readers took no links.
    links = (build.links(),) if hasattr(build, "links") else ()
    message = provider.prepare(
        build.template.for_readers(readers, provider.field, metadata, *links)
    )
    backend = provider.connection(connection)
    payload = backend.build_message_payload(message, backend.send_defaults)
    return payload, payload.serialize_data()


def main():
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {"MAILGUN_API_KEY": "key-bench"}
    settings.DEFAULT_FROM_EMAIL = "news@example.com"
    post = SimpleNamespace(
        title="Report says Sessions and Rosenstein pushed child separations",
        get_absolute_url=lambda: "/2020/10/07/report-says/",
        email_summary=lambda: "A new report by the inspector general shows …",
        published_at=None,
    )
    snapshot = emails.post_snapshot(post)
    mailing = SimpleNamespace(pk=12345, **{k: snapshot[k] for k in ("subject", "text", "html")})
    mailing.links = snapshot["links"]
    people = [
        Subscriber(pk=100000 + i, email=f"reader{100000 + i}@example.com", name="",
                   key=secrets.token_urlsafe(16))
        for i in range(N)
    ]  # fmt: skip
    metadata = {s.email: {"row": f"delivery:{4000000 + s.pk}"} for s in people}
    connection = get_connection()
    provider = providers.provider_of(connection)
    payload, body = call(mailing, people, metadata, connection, provider)
    variables = payload.data["recipient-variables"]
    result = {
        "recipient_variables_bytes_per_reader": round(len(variables.encode()) / N, 1),
        "form_bytes_per_reader": round(len(body) / N, 1),
        "names_per_reader": sorted(json.loads(variables)[people[0].email]),
    }
    if "--cpu" in sys.argv:
        times = []
        for _ in range(15):
            start = time.process_time()
            call(mailing, people, metadata, connection, provider)
            times.append((time.process_time() - start) * 1000)
        result["cpu_ms_per_call_median"] = round(statistics.median(times), 1)
        result["cpu_ms_per_call"] = [round(t, 1) for t in times]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
