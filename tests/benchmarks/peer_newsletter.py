"""Runs inside django-newsletter's own virtualenv (var/bench/peer-venv), with
the settings bench_peer.py generates under var/bench/peer/. Imports nothing
from this project.

    python peer_newsletter.py setup N   # migrate; one newsletter, N subscribers,
                                        # one message, one prepared submission
    python peer_newsletter.py submit    # `manage.py submit_newsletter`, measured

`submit` prints one JSON line: wall-clock start and end (time.time(), to
compare with the SMTP sink's timestamps), SQL queries executed (counted with
connection.execute_wrapper, which costs next to nothing) and this process's
peak RSS.
"""

import json
import os
import resource
import sys
import time
from datetime import timedelta

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peer_settings")
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils.timezone import now  # noqa: E402
from newsletter.models import Article, Message, Newsletter, Submission, Subscription  # noqa: E402

PARAGRAPH = (
    "A new report by the inspector general shows that senior officials pushed "
    "for the policy even as field offices warned of the consequences, according "
    "to documents reviewed for this article. "
)


def setup(n):
    call_command("migrate", verbosity=0, interactive=False)
    newsletter = Newsletter.objects.create(
        title="Newsroom", slug="newsroom", email="news@localhost", sender="Newsroom"
    )
    Subscription.objects.bulk_create(
        Subscription(
            newsletter=newsletter,
            email_field=f"reader{i}@example.com",
            name_field=f"Reader {i}",
            subscribed=True,
            subscribe_date=now(),
        )
        for i in range(n)
    )
    message = Message.objects.create(
        title="Report says officials pushed the policy", slug="report", newsletter=newsletter
    )
    # About 5 KB once sent: the text appears in the plain and the HTML part.
    Article.objects.create(
        post=message,
        title="Report says officials pushed the policy",
        text="".join(f"<p>{PARAGRAPH * 2}</p>\n" for _ in range(5)),
        url="https://example.com/articles/report/",
    )
    submission = Submission.from_message(message)
    Submission.objects.filter(pk=submission.pk).update(
        prepared=True, publish_date=now() - timedelta(minutes=1)
    )


def submit():
    queries = 0

    def count(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    start = time.time()
    with connection.execute_wrapper(count):
        call_command("submit_newsletter", verbosity=0)
    end = time.time()
    print(
        json.dumps(
            {
                "start": start,
                "end": end,
                "queries": queries,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(int(sys.argv[2]))
    else:
        submit()
