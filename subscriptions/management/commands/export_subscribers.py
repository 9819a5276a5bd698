"""Write subscribers as CSV: email,name,frequency,topics (what
import_subscribers reads).

    python manage.py export_subscribers [--status confirmed|pending|…|all] [-o FILE]

Rows stream from the database in chunks, so memory stays flat for a million
subscribers. It only reads, so it is safe to run at any time, and twice.
"""

import csv

from django.core.management.base import BaseCommand

from subscriptions.models import CSV_COLUMNS, Subscriber

from ._progress import Progress


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
        progress = Progress(self.stderr)
        if progress.enabled:
            progress.total = subscribers.count()
        out = open(output, "w", newline="", encoding="utf-8") if output else _Stdout(self.stdout)
        try:
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            count = 0
            for count, row in enumerate(subscribers.csv_rows(), 1):
                writer.writerow(row)
                if count % 1000 == 0:
                    progress.update(count)
            progress.finish(count)
        finally:
            if output:
                out.close()
