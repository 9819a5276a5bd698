"""Import subscribers from a CSV file.

    python manage.py import_subscribers FILE.csv [--confirmed]

Columns: email (required), name, frequency (instant/daily/weekly), topics
(keys separated by spaces); the first line names them. The file is read as a
stream and committed a batch at a time, so memory stays flat for a million
rows. Bad rows are reported with their line number and skipped.

Safe to run twice: addresses already stored are skipped and never changed,
so a second run adds nothing and sends no second confirmation email.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from subscriptions.models import Subscriber

from ._progress import Progress


class Command(BaseCommand):
    help = "Import subscribers from a CSV file (email,name,frequency,topics)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="The CSV file.")
        parser.add_argument(
            "--confirmed",
            action="store_true",
            help="Consent was collected elsewhere: subscribe at once, send no confirmation email.",
        )

    def handle(self, file, confirmed=False, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        progress = Progress(self.stderr, unit="lines")
        if progress.enabled:
            with path.open("rb") as f:
                progress.total = sum(1 for _ in f)
        note = f"Imported from {path.name} on {timezone.now():%Y-%m-%d}; " + (
            "consent collected elsewhere." if confirmed else "confirmation requested by email."
        )

        def lines(f):
            number = 0
            for number, line in enumerate(f, 1):
                if number % 1000 == 0:
                    progress.update(number)
                yield line
            progress.finish(number)

        def on_error(line, message):
            progress.message(f"line {line}: {message}")

        # Undecodable bytes become U+FFFD, which no valid address contains:
        # the row is reported, not the whole file refused.
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
            try:
                result = Subscriber.objects.import_csv(
                    lines(f), confirmed=confirmed, note=note, on_error=on_error
                )
            except ValueError as e:
                raise CommandError(str(e)) from None
        self.stdout.write(
            f"{result.created} added, {result.duplicates} already there or repeated, "
            f"{result.error_count} bad rows skipped."
        )
