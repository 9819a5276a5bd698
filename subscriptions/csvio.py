"""Subscribers as CSV: email,name,frequency,topics — read by import_csv()
(the import_subscribers command and the admin's import page) and written by
rows() (export_subscribers and the admin's export). Both stream: constant
memory for a million rows.
"""

import csv
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Prefetch
from django.utils import timezone

from . import delivery
from .conf import conf
from .models import Follow, Subscriber, clean_name, normalize_email

COLUMNS = ["email", "name", "frequency", "topics"]
BATCH_SIZE = 1000
# Bad rows kept in an ImportResult for a page to show; the rest are counted.
MAX_LISTED_ERRORS = 1000


@dataclass
class ImportResult:
    created: int = 0
    duplicates: int = 0  # Already a subscriber, or twice in the file.
    errors: list = field(default_factory=list)  # (line number, message), the first ones
    error_count: int = 0


def import_csv(lines, *, confirmed=False, note="Imported", on_error=None):
    """Add the subscribers in a CSV file (COLUMNS; only email is required).

    Addresses already stored are left alone (an unsubscribed reader is
    never resubscribed by an import). `confirmed` means consent was
    collected elsewhere; otherwise each new address is sent a confirmation
    email. Bad rows are reported with their line number (to
    `on_error(line, message)`, or in the result) and skipped; good rows are
    kept, committed a batch at a time.
    """
    result = ImportResult()
    reader = csv.DictReader(lines)
    columns = [c.strip().lower() for c in (reader.fieldnames or [])]
    if "email" not in columns:
        raise ValueError("The first line must name the columns, including “email”.")
    reader.fieldnames = columns
    # A file names topics by their CSV name (a slug on Newsroom) or by key.
    names = conf.topic_names()
    known_topics = {key: key for key in names} | {name: key for key, name in names.items()}

    def report(line, message):
        result.error_count += 1
        if on_error:
            on_error(line, message)
        elif len(result.errors) < MAX_LISTED_ERRORS:
            result.errors.append((line, message))

    batch = {}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            report(reader.line_num, f"unreadable row ({e})")
            continue
        try:
            subscriber, topics = parse_row(row, known_topics)
        except ValidationError as e:
            report(reader.line_num, " ".join(e.messages))
            continue
        if subscriber.email in batch:
            result.duplicates += 1
            continue
        batch[subscriber.email] = (subscriber, topics)
        if len(batch) >= BATCH_SIZE:
            _import_batch(batch, confirmed, note, result)
            batch = {}
    if batch:
        _import_batch(batch, confirmed, note, result)
    return result


def _import_batch(batch, confirmed, note, result):
    now = timezone.now()
    with transaction.atomic():
        existing = set(
            Subscriber.objects.filter(email__in=list(batch)).values_list("email", flat=True)
        )
        result.duplicates += len(existing)
        new = []
        for email, (subscriber, _) in batch.items():
            if email in existing:
                continue
            subscriber.consent_at = now
            subscriber.consent_wording = note
            if confirmed:
                subscriber.status = Subscriber.Status.CONFIRMED
                subscriber.confirmed_at = now
            else:
                subscriber.status = Subscriber.Status.PENDING
                subscriber.confirmation_sent_at = now
            new.append(subscriber)
        try:
            with transaction.atomic():
                created = Subscriber.objects.bulk_create(new)
        except IntegrityError:
            # Someone subscribed through the form meanwhile: one by one.
            created = []
            for subscriber in new:
                try:
                    with transaction.atomic():
                        subscriber.save(force_insert=True)
                    created.append(subscriber)
                except IntegrityError:
                    result.duplicates += 1
        Follow.objects.bulk_create(
            Follow(subscriber=s, topic=topic) for s in created for topic in batch[s.email][1]
        )
        result.created += len(created)
        if not confirmed:
            delivery.queue_confirmations(created)


def parse_row(row, known_topics):
    """(unsaved Subscriber, topic keys) from a csv.DictReader row;
    `known_topics` maps each name a file may use (CSV name or key) to its
    key. Raises ValidationError naming what is wrong."""
    if None in row:
        raise ValidationError("too many columns")
    email = (row.get("email") or "").strip()
    if not email:
        raise ValidationError("no email address")
    try:
        email = normalize_email(email)
    except ValidationError:
        raise ValidationError(f"not a valid email address: {email[:100]!r}") from None
    Frequency = Subscriber.Frequency
    frequency = (row.get("frequency") or "").strip().lower() or Frequency.INSTANT
    if frequency not in Frequency.values:
        raise ValidationError(
            f"frequency must be one of {', '.join(Frequency.values)}, not {frequency[:50]!r}"
        )
    named = (row.get("topics") or "").split()
    unknown = [t for t in named if t not in known_topics]
    if unknown:
        raise ValidationError(f"unknown topics: {' '.join(unknown)[:200]}")
    topics = sorted({known_topics[t] for t in named})
    subscriber = Subscriber(
        email=email,
        name=clean_name(row.get("name")),
        frequency=frequency,
        follows_everything=not topics,
    )
    return subscriber, topics


def rows(subscribers):
    """COLUMNS rows of a Subscriber queryset, streaming in id order
    (constant memory). Topics by their CSV name as it is now, so the file
    imports back."""
    names = conf.topic_names()
    subscribers = (
        subscribers.order_by("pk")
        .prefetch_related(None)
        .only("email", "name", "frequency")
        .prefetch_related(Prefetch("follows", queryset=Follow.objects.order_by("topic")))
    )
    for subscriber in subscribers.iterator(chunk_size=2000):
        yield [
            subscriber.email,
            subscriber.name,
            subscriber.frequency,
            " ".join(sorted(names.get(key, key) for key in subscriber.topics())),
        ]
