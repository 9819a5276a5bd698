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
from tqdm import tqdm

from subscriptions import csvio


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
        out = self.stderr._out
        # A bar (rate, ETA) on a terminal only; None: off when not a TTY.
        progress = tqdm(unit="lines", file=out, disable=None, mininterval=0.1)
        if not progress.disable:
            with path.open("rb") as f:
                progress.total = sum(1 for _ in f)
        note = f"Imported from {path.name} on {timezone.now():%Y-%m-%d}; " + (
            "consent collected elsewhere." if confirmed else "confirmation requested by email."
        )

        def lines(f):
            for line in f:
                progress.update()
                yield line
            progress.close()

        def on_error(line, message):
            progress.write(f"line {line}: {message}", file=out)

        # Undecodable bytes become U+FFFD, which no valid address contains:
        # the row is reported, not the whole file refused.
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
            try:
                result = csvio.import_csv(
                    lines(f), confirmed=confirmed, note=note, on_error=on_error
                )
            except ValueError as e:
                raise CommandError(str(e)) from None
        self.stdout.write(
            f"{result.created} added, {result.duplicates} already there or repeated, "
            f"{result.error_count} bad rows skipped."
        )
