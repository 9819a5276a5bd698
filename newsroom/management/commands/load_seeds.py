"""Load seed articles: `manage.py load_seeds [PATH…] [--no-email]`.

Safe to run twice: an article already loaded (same slug) is left as it is, so
a second run creates and changes nothing. Every file is checked before
anything is written, and each article is created in one transaction: a bad
file stops the command with its name and line, and leaves no half-made article.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from newsroom.seeds import SeedError, load_seed, parse_seed


class Command(BaseCommand):
    help = "Load seed articles (default: every file in seeds/) as published articles."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", type=Path, help="Seed files or folders.")
        parser.add_argument(
            "--no-email",
            action="store_true",
            help="Do not email the new articles to subscribers.",
        )
        parser.add_argument(
            "--create-entities",
            action="store_true",
            help="For a file without front matter, create the new names the entity "
            "extractor finds (known entities are always tagged).",
        )

    def handle(self, *paths, **options):
        files = []
        for path in options["paths"] or [settings.BASE_DIR / "seeds"]:
            if path.is_dir():
                files += sorted(
                    p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                )
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{path}: no such file or folder")
        try:
            seeds = [parse_seed(path) for path in files]
        except SeedError as exc:
            raise CommandError(str(exc)) from None
        created = 0
        for seed in seeds:
            article = load_seed(
                seed, email=not options["no_email"], create_entities=options["create_entities"]
            )
            if article is None:
                self.stdout.write(f"{seed.path.name}: already loaded, unchanged")
                continue
            created += 1
            self.stdout.write(
                f"{seed.path.name}: loaded “{article.title}” at {article.get_absolute_url()}"
            )
            for what, name, kind, role in article.extracted:
                detail = f"({role})" if role else "(not created: use --create-entities)"
                self.stdout.write(f"  {what} {kind} “{name}” {detail}")
        self.stdout.write(
            self.style.SUCCESS(f"{created} article(s) loaded, {len(seeds) - created} unchanged.")
        )
