"""Subscribers: who gets the newsletter, what they follow, and their consent."""

import csv
import secrets
from dataclasses import dataclass, field

from django.apps import apps
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, models, transaction
from django.db.models import Count, Prefetch, Q
from django.urls import reverse
from django.utils import timezone

from .conf import conf

MAX_NAME_LENGTH = 100
MAX_TOPIC_LENGTH = 200
CSV_COLUMNS = ["email", "name", "frequency", "topics"]
IMPORT_BATCH_SIZE = 1000
# Bad rows kept in an ImportResult for a page to show; the rest are counted.
MAX_LISTED_ERRORS = 1000


def normalize_email(value):
    """The one spelling of an address that is stored: trimmed, the domain in
    lower case and in its ASCII (IDNA) form, so "Ann@Bücher.Example" and
    "Ann@xn--bcher-kva.example" are one subscriber. The local part is kept as
    typed (RFC 5321 lets mail servers treat its case as significant).

    Raises ValidationError with a message for readers.
    """
    value = (value or "").strip()
    local, at, domain = value.rpartition("@")
    error = ValidationError("Enter a valid email address, like name@example.com.", code="invalid")
    # Quoted local parts may hold control characters; nobody subscribes with one.
    if not at or not local or not domain or '"' in local or "\\" in local:
        raise error
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise error from None
    email = f"{local}@{domain}"
    if len(email) > 254:
        raise ValidationError("That address is too long.", code="too_long")
    validate_email(email)  # Also refuses CR, LF and every other space.
    return email


def clean_name(value):
    """One line of printable text: line breaks and control characters become
    spaces, so a name can never break an email header or a CSV row."""
    text = "".join(c if c.isprintable() else " " for c in str(value or ""))
    return " ".join(text.split())[:MAX_NAME_LENGTH]


def enqueue_after_commit(task, pk):
    """Queue `task(pk)` once the transaction commits, so the worker finds
    the row. Robust: a broker outage is logged, not turned into an error
    page for a reader whose sign-up is already saved (an editor can resend
    the confirmation from the admin)."""

    def enqueue():  # Not a partial: Django logs a robust hook's __qualname__.
        task.delay(pk)

    transaction.on_commit(enqueue, robust=True)


def new_key():
    return secrets.token_urlsafe(16)


class BadToken(Exception):
    """A link whose token is tampered with, meant for another purpose, or
    for a subscriber who no longer exists."""

    message = "This link is not valid. Please use the latest link we sent you."


class ExpiredToken(BadToken):
    message = "This link has expired. Subscribe again and we will send you a new one."


@dataclass
class Consent:
    """What a reader agreed to, and where: kept with the subscriber."""

    wording: str
    page: str = ""
    ip: str | None = None
    user_agent: str = ""


@dataclass
class ImportResult:
    created: int = 0
    duplicates: int = 0  # Already a subscriber, or twice in the file.
    errors: list = field(default_factory=list)  # (line number, message), the first ones
    error_count: int = 0


class SubscriberQuerySet(models.QuerySet):
    def confirmed(self):
        return self.filter(status=Subscriber.Status.CONFIRMED)

    def following(self, topics):
        """Subscribers a post about `topics` goes to: those who follow
        everything and those who follow any of the topics."""
        followers = Follow.objects.filter(topic__in=list(topics)).values("subscriber_id")
        return self.filter(Q(follows_everything=True) | Q(pk__in=followers))

    def counts_by_status(self):
        """{status: count} for every status, in one query."""
        counts = self.aggregate(
            **{s.value: Count("pk", filter=Q(status=s.value)) for s in Subscriber.Status}
        )
        return {Subscriber.Status(k): v for k, v in counts.items()}

    def subscribe(self, email, *, consent, name="", frequency=None, topics=()):
        """Record a sign-up from a form and ask the address to confirm it.

        New and unsubscribed addresses become pending with this consent and
        these preferences; a pending one takes the latest ones. A confirmed
        or suppressed address is left exactly as it is: whoever posted the
        form has not shown they own it. The caller cannot tell which case
        happened, so neither can the reader's browser.
        """
        Status = Subscriber.Status
        email = normalize_email(email)
        topics = sorted(set(topics))
        fields = {
            "name": clean_name(name),
            "frequency": frequency or Subscriber.Frequency.INSTANT,
            "follows_everything": not topics,
            "consent_at": timezone.now(),
            "consent_wording": consent.wording,
            "consent_page": consent.page[:500],
            "consent_ip": consent.ip or None,
            "consent_user_agent": consent.user_agent[:500],
        }
        with transaction.atomic():
            subscriber, created = self.get_or_create(
                email=email, defaults={"status": Status.PENDING, **fields}
            )
            if not created:
                updated = self.filter(
                    pk=subscriber.pk, status__in=[Status.PENDING, Status.UNSUBSCRIBED]
                ).update(status=Status.PENDING, **fields)
                if not updated:
                    return subscriber
                subscriber.refresh_from_db()
            subscriber.set_follows(topics)
            subscriber.request_confirmation()
        return subscriber

    def import_csv(self, lines, *, confirmed=False, note="Imported", on_error=None):
        """Add the subscribers in a CSV file (CSV_COLUMNS; only email is
        required), streaming: constant memory for any number of rows.

        Addresses already stored are left alone (an unsubscribed reader is
        never resubscribed by an import). `confirmed` means consent was
        collected elsewhere; otherwise each new address is sent a
        confirmation email. Bad rows are reported with their line number
        (to `on_error(line, message)`, or in the result) and skipped; good
        rows are kept, committed a batch at a time.
        """
        result = ImportResult()
        reader = csv.DictReader(lines)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "email" not in columns:
            raise ValueError("The first line must name the columns, including “email”.")
        reader.fieldnames = columns
        known_topics = {key for key, _ in conf.topics()}

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
                subscriber, topics = Subscriber.from_csv_row(row, known_topics)
            except ValidationError as e:
                report(reader.line_num, " ".join(e.messages))
                continue
            if subscriber.email in batch:
                result.duplicates += 1
                continue
            batch[subscriber.email] = (subscriber, topics)
            if len(batch) >= IMPORT_BATCH_SIZE:
                self._import_batch(batch, confirmed, note, result)
                batch = {}
        if batch:
            self._import_batch(batch, confirmed, note, result)
        return result

    def _import_batch(self, batch, confirmed, note, result):
        now = timezone.now()
        with transaction.atomic():
            existing = set(self.filter(email__in=list(batch)).values_list("email", flat=True))
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
                    created = self.bulk_create(new)
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
                from .tasks import send_confirmation

                for subscriber in created:
                    enqueue_after_commit(send_confirmation, subscriber.pk)

    def csv_rows(self):
        """CSV_COLUMNS rows, streaming in id order (constant memory)."""
        subscribers = (
            self.order_by("pk")
            .prefetch_related(None)
            .only("email", "name", "frequency")
            .prefetch_related(Prefetch("follows", queryset=Follow.objects.order_by("topic")))
        )
        for subscriber in subscribers.iterator(chunk_size=2000):
            yield subscriber.csv_row()


class Subscriber(models.Model):
    """A reader who asked for the newsletter."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending confirmation"
        CONFIRMED = "confirmed", "Confirmed"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        SUPPRESSED = "suppressed", "Suppressed"

    class Frequency(models.TextChoices):
        INSTANT = "instant", "Every post, as it is published"
        DAILY = "daily", "A daily digest"
        WEEKLY = "weekly", "A weekly digest"

    email = models.EmailField(
        max_length=254,
        unique=True,
        help_text="Stored trimmed, with the domain in lower case (international domains "
        "in their xn-- form), so one address is one subscriber.",
    )
    name = models.CharField(max_length=MAX_NAME_LENGTH, blank=True)
    status = models.CharField(
        max_length=20,
        choices=Status.choices,
        default=Status.PENDING,
        help_text="Pending: has not clicked the confirmation link yet, gets nothing. "
        "Confirmed: gets emails. Unsubscribed: left; can come back only by subscribing again. "
        "Suppressed: never emailed again (bounces, complaints).",
    )
    frequency = models.CharField(
        max_length=10, choices=Frequency.choices, default=Frequency.INSTANT
    )
    follows_everything = models.BooleanField(
        default=True,
        help_text="Gets every post. Otherwise only posts about the topics they follow.",
    )
    key = models.CharField(
        max_length=32,
        unique=True,
        default=new_key,
        editable=False,
        help_text="Random; the signed links in emails carry it instead of the id.",
    )
    consent_at = models.DateTimeField(
        "consent given", null=True, blank=True, help_text="When they sent the form."
    )
    consent_ip = models.GenericIPAddressField("consent IP address", null=True, blank=True)
    consent_user_agent = models.CharField("consent browser", max_length=500, blank=True)
    consent_page = models.CharField(
        max_length=500, blank=True, help_text="The page the form was on."
    )
    consent_wording = models.TextField(
        blank=True, help_text="The words the reader saw next to the form."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    confirmation_sent_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    objects = SubscriberQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Delivery fan-out: confirmed subscribers of one frequency, walked
            # in id ranges (status=confirmed, frequency=instant, id > last).
            models.Index(fields=["status", "frequency", "id"], name="subscriber_fanout_idx"),
            # The admin's default list, newest first.
            models.Index(fields=["-created_at", "-id"], name="subscriber_newest_idx"),
        ]

    def __str__(self):
        return self.email

    # Signed links. Each purpose has its own salt: a confirmation link cannot
    # unsubscribe, an unsubscribe link cannot open the preferences.
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"

    def make_token(self, purpose):
        return signing.dumps(self.key, salt=f"subscriptions.{purpose}")

    @classmethod
    def from_token(cls, token, purpose):
        """The subscriber a link is for; raises BadToken or ExpiredToken."""
        max_age = conf.CONFIRM_MAX_AGE if purpose == cls.CONFIRM else conf.LINK_MAX_AGE
        try:
            key = signing.loads(token, salt=f"subscriptions.{purpose}", max_age=max_age)
        except signing.SignatureExpired:
            raise ExpiredToken from None
        except signing.BadSignature:
            raise BadToken from None
        subscriber = cls.objects.filter(key=str(key)).first()
        if subscriber is None:
            raise BadToken
        return subscriber

    def _path(self, name, purpose):
        return reverse(f"subscriptions:{name}", args=[self.make_token(purpose)])

    def _url(self, name, purpose):
        return conf.absolute_url(self._path(name, purpose))

    def confirm_url(self):
        return self._url("confirm", self.CONFIRM)

    def unsubscribe_url(self):
        return self._url("unsubscribe", self.UNSUBSCRIBE)

    def one_click_url(self):
        """For the List-Unsubscribe header (RFC 8058)."""
        return self._url("one_click", self.UNSUBSCRIBE)

    def preferences_url(self):
        return self._url("preferences", self.PREFERENCES)

    # Site-relative links for pages (the site may be reached under another
    # host name than SITE_URL, e.g. in development).

    def unsubscribe_path(self):
        return self._path("unsubscribe", self.UNSUBSCRIBE)

    def preferences_path(self):
        return self._path("preferences", self.PREFERENCES)

    # Behaviour. Each change is a conditional update, so two clicks, two
    # workers or a retry cannot do it twice; the return value says whether
    # this call did it.

    def set_follows(self, topics):
        """Follow exactly `topics`; none means everything."""
        topics = set(topics)
        self.follows_everything = not topics
        Subscriber.objects.filter(pk=self.pk).update(follows_everything=self.follows_everything)
        self.follows.exclude(topic__in=topics).delete()
        Follow.objects.bulk_create(
            [Follow(subscriber=self, topic=t) for t in sorted(topics)], ignore_conflicts=True
        )

    def topics(self):
        return sorted(f.topic for f in self.follows.all())

    def request_confirmation(self):
        """Queue a confirmation email, unless one went out within
        SUBSCRIPTIONS_CONFIRMATION_WINDOW: however often the form is posted,
        a pending address gets at most one per window."""
        now = timezone.now()
        claimed = (
            Subscriber.objects.filter(pk=self.pk, status=self.Status.PENDING)
            .filter(
                Q(confirmation_sent_at__isnull=True)
                | Q(confirmation_sent_at__lte=now - conf.CONFIRMATION_WINDOW)
            )
            .update(confirmation_sent_at=now)
        )
        if claimed:
            from .tasks import send_confirmation

            self.confirmation_sent_at = now
            enqueue_after_commit(send_confirmation, self.pk)
        return bool(claimed)

    def confirm(self):
        """Pending → confirmed, and a welcome email. An unsubscribed or
        suppressed reader is not brought back by an old confirmation link."""
        now = timezone.now()
        done = Subscriber.objects.filter(pk=self.pk, status=self.Status.PENDING).update(
            status=self.Status.CONFIRMED, confirmed_at=now
        )
        self.refresh_from_db()
        if done:
            from .tasks import send_welcome

            enqueue_after_commit(send_welcome, self.pk)
        return bool(done)

    def unsubscribe(self):
        """Stops every email not yet sent: delivery only picks confirmed rows."""
        done = Subscriber.objects.filter(
            pk=self.pk, status__in=[self.Status.PENDING, self.Status.CONFIRMED]
        ).update(status=self.Status.UNSUBSCRIBED, unsubscribed_at=timezone.now())
        self.refresh_from_db()
        return bool(done)

    def suppress(self):
        """Never email this address again (hard bounces, complaints)."""
        done = (
            Subscriber.objects.filter(pk=self.pk)
            .exclude(status=self.Status.SUPPRESSED)
            .update(status=self.Status.SUPPRESSED)
        )
        self.refresh_from_db()
        return bool(done)

    def update_preferences(self, *, name, frequency, topics):
        Subscriber.objects.filter(pk=self.pk).update(name=clean_name(name), frequency=frequency)
        self.set_follows(topics)
        self.refresh_from_db()

    def erase(self):
        """Delete every trace of the reader (right to erasure), including
        the admin's history entries, whose titles hold the address."""
        with transaction.atomic():
            if apps.is_installed("django.contrib.admin"):
                from django.contrib.admin.models import LogEntry
                from django.contrib.contenttypes.models import ContentType

                LogEntry.objects.filter(
                    content_type=ContentType.objects.get_for_model(Subscriber),
                    object_id=str(self.pk),
                ).delete()
            self.delete()

    def export_data(self):
        """Everything stored about the reader, for "download my data"."""

        def iso(value):
            return value.isoformat() if value else None

        return {
            "email": self.email,
            "name": self.name,
            "status": self.status,
            "frequency": self.frequency,
            "follows_everything": self.follows_everything,
            "topics": self.topics(),
            "consent": {
                "at": iso(self.consent_at),
                "ip": self.consent_ip,
                "user_agent": self.consent_user_agent,
                "page": self.consent_page,
                "wording": self.consent_wording,
            },
            "created_at": iso(self.created_at),
            "confirmation_sent_at": iso(self.confirmation_sent_at),
            "confirmed_at": iso(self.confirmed_at),
            "unsubscribed_at": iso(self.unsubscribed_at),
        }

    # CSV (import_subscribers, export_subscribers, the admin).

    def csv_row(self):
        return [self.email, self.name, self.frequency, " ".join(self.topics())]

    @classmethod
    def from_csv_row(cls, row, known_topics):
        """(unsaved Subscriber, topics) from a csv.DictReader row; raises
        ValidationError naming what is wrong."""
        if None in row:
            raise ValidationError("too many columns")
        email = (row.get("email") or "").strip()
        if not email:
            raise ValidationError("no email address")
        try:
            email = normalize_email(email)
        except ValidationError:
            raise ValidationError(f"not a valid email address: {email[:100]!r}") from None
        frequency = (row.get("frequency") or "").strip().lower() or cls.Frequency.INSTANT
        if frequency not in cls.Frequency.values:
            raise ValidationError(
                f"frequency must be one of {', '.join(cls.Frequency.values)}, not {frequency[:50]!r}"
            )
        topics = sorted(set((row.get("topics") or "").split()))
        unknown = [t for t in topics if t not in known_topics]
        if unknown:
            raise ValidationError(f"unknown topics: {' '.join(unknown)[:200]}")
        subscriber = cls(
            email=email,
            name=clean_name(row.get("name")),
            frequency=frequency,
            follows_everything=not topics,
        )
        return subscriber, topics


class Follow(models.Model):
    """A topic a subscriber follows (an entity, on Newsroom)."""

    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="follows")
    topic = models.CharField(
        max_length=MAX_TOPIC_LENGTH, help_text="The topic's key, as the site names it."
    )

    class Meta:
        ordering = ["topic"]
        constraints = [
            models.UniqueConstraint(fields=["subscriber", "topic"], name="unique_follow"),
        ]
        indexes = [
            # Delivery: the subscribers following any of a post's topics
            # (SubscriberQuerySet.following); also the admin's topic filter.
            models.Index(fields=["topic", "subscriber"], name="follow_topic_idx"),
        ]

    def __str__(self):
        return self.topic
