"""Write subscribers as CSV: email,name,frequency,topics (what
import_subscribers reads).

    python manage.py export_subscribers [--status confirmed|pending|…|all] [-o FILE]

Rows stream from the database in chunks, so memory stays flat for a million
subscribers. It only reads, so it is safe to run at any time, and twice.
"""

import csv

from django.core.management.base import BaseCommand
from tqdm import tqdm

from subscriptions import csvio
from subscriptions.models import Subscriber


class _Stdout:
    """self.stdout for csv.writer: rows already end in a line break."""

    def __init__(self, wrapper):
        self.wrapper = wrapper

    def write(self, text):
        self.wrapper.write(text, ending="")


class Command(BaseCommand):
    help = "Export subscribers as CSV (email,name,frequency,topics)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--status",
            default=Subscriber.Status.CONFIRMED,
            choices=[*Subscriber.Status.values, "all"],
            help="Which subscribers (default: confirmed, the ones who get emails).",
        )
        parser.add_argument("-o", "--output", help="Write to this file instead of stdout.")

    def handle(self, status, output=None, **options):
        subscribers = Subscriber.objects.all()
        if status != "all":
            subscribers = subscribers.filter(status=status)
        # A bar (rate, ETA) on a terminal only; None: off when not a TTY.
        progress = tqdm(unit="rows", file=self.stderr._out, disable=None, mininterval=0.1)
        if not progress.disable:
            progress.total = subscribers.count()
        out = open(output, "w", newline="", encoding="utf-8") if output else _Stdout(self.stdout)
        try:
            writer = csv.writer(out)
            writer.writerow(csvio.COLUMNS)
            for row in csvio.rows(subscribers):
                writer.writerow(row)
                progress.update()
        finally:
            progress.close()
            if output:
                out.close()
