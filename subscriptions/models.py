"""The tables and their state changes: subscribers, what they follow and
their consent; mailings and the delivery ledger (Delivery, Digest).

Nothing here queues work or sends email: delivery.py does, calling these.
"""

import re
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, models, transaction
from django.db.models import Count, Exists, F, Min, OuterRef, Q, Subquery
from django.utils import timezone

from . import tokens
from .conf import conf

MAX_NAME_LENGTH = 100
MAX_TOPIC_LENGTH = 200
MAX_LOCAL_PART_LENGTH = 64  # RFC 5321, 4.5.3.1.1: mail servers may refuse longer.


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
    if len(local) > MAX_LOCAL_PART_LENGTH:
        raise ValidationError(
            f"The part before the @ can be at most {MAX_LOCAL_PART_LENGTH} characters.",
            code="too_long",
        )
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


def new_key():
    return secrets.token_urlsafe(16)


@dataclass
class Consent:
    """What a reader agreed to, and where: kept with the subscriber."""

    wording: str
    page: str = ""
    ip: str | None = None
    user_agent: str = ""


class SubscriberQuerySet(models.QuerySet):
    def confirmed(self):
        return self.filter(status=Subscriber.Status.CONFIRMED)

    def confirmed_among(self, ids):
        """The ids among `ids` of readers still confirmed (and not erased)."""
        return set(self.confirmed().filter(pk__in=list(ids)).values_list("pk", flat=True))

    def following(self, topics):
        """Subscribers a post about `topics` goes to: those who follow
        everything and those who follow any of the topics."""
        followers = Follow.objects.filter(topic__in=list(topics)).values("subscriber_id")
        return self.filter(Q(follows_everything=True) | Q(pk__in=followers))

    def suppress_bouncing(self, ids):
        """Suppress the readers among `ids` whose address was refused for good
        HARD_BOUNCE_LIMIT times: they are never emailed again."""
        if not ids:
            return 0
        refusals = Counter()
        # One refused message each: a post sent alone, or a whole digest.
        for model, extra in ((Delivery, {"digest__isnull": True}), (Digest, {})):
            rows = (
                model.objects.filter(
                    subscriber__in=ids, status=model.Status.FAILED, permanent=True, **extra
                )
                .values_list("subscriber")
                .annotate(n=Count("pk"))
            )
            refusals.update(dict(rows))
        return self.suppress([pk for pk, n in refusals.items() if n >= conf.HARD_BOUNCE_LIMIT])

    def suppress(self, ids):
        """Never email these readers again; returns how many were not yet."""
        if not ids:
            return 0
        return (
            self.filter(pk__in=ids)
            .exclude(status=Subscriber.Status.SUPPRESSED)
            .update(status=Subscriber.Status.SUPPRESSED)
        )

    def counts_by_status(self):
        """{status: count} for every status, in one query."""
        counts = self.aggregate(
            **{s.value: Count("pk", filter=Q(status=s.value)) for s in Subscriber.Status}
        )
        return {Subscriber.Status(k): v for k, v in counts.items()}

    def subscribe(self, email, *, consent, name="", frequency=None, topics=()):
        """Record a sign-up from a form (delivery.subscribe then asks the
        address to confirm it).

        New and unsubscribed addresses become pending with this consent and
        these preferences; a pending one takes the latest ones. A confirmed
        or suppressed address is left exactly as it is: whoever posted the
        form has not shown they own it. Returns the subscriber, which is
        pending exactly when this sign-up was recorded.
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
            # A new address, the common case (a viral article's sign-ups):
            # one INSERT, no read before it and no follows to clear after.
            try:
                with transaction.atomic():
                    subscriber = self.create(email=email, status=Status.PENDING, **fields)
            except IntegrityError:  # the address is known (the unique email)
                subscriber = self.get(email=email)
            else:
                Follow.objects.bulk_create([Follow(subscriber=subscriber, topic=t) for t in topics])
                return subscriber
            updated = self.filter(
                pk=subscriber.pk, status__in=[Status.PENDING, Status.UNSUBSCRIBED]
            ).update(status=Status.PENDING, **fields)
            if not updated:
                return subscriber
            subscriber.refresh_from_db()
            subscriber.set_follows(topics)
        return subscriber


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

    # Signed links (tokens.py): each purpose has its own salt.
    CONFIRM = tokens.CONFIRM
    UNSUBSCRIBE = tokens.UNSUBSCRIBE
    PREFERENCES = tokens.PREFERENCES

    def make_token(self, purpose):
        return tokens.make(self.key, purpose)

    @classmethod
    def from_token(cls, token, purpose):
        """The subscriber a link is for; raises tokens.BadToken or
        tokens.ExpiredToken."""
        subscriber = cls.objects.filter(key=tokens.load(token, purpose)).first()
        if subscriber is None:
            raise tokens.BadToken
        return subscriber

    def _path(self, name, purpose):
        return tokens.path(name, self.make_token(purpose))

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

    def email_links(self):
        """The links a post or digest carries, as fast as they can be made
        for thousands of readers: two signatures, no URL resolving."""
        unsubscribe, preferences = (
            self.make_token(self.UNSUBSCRIBE),
            self.make_token(self.PREFERENCES),
        )
        return {
            "UNSUBSCRIBE": tokens.url("unsubscribe", unsubscribe),
            "ONECLICK": tokens.url("one_click", unsubscribe),
            "PREFERENCES": tokens.url("preferences", preferences),
        }

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

    def claim_confirmation(self):
        """Whether a confirmation email may go out now: not if one went out
        within SUBSCRIPTIONS_CONFIRMATION_WINDOW, so however often the form
        is posted, a pending address gets at most one per window. A True
        answer records the send time (delivery.request_confirmation queues
        the email)."""
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
            self.confirmation_sent_at = now
        return bool(claimed)

    def confirm(self):
        """Pending → confirmed (delivery.confirm then sends the welcome). An
        unsubscribed or suppressed reader is not brought back by an old
        confirmation link."""
        now = timezone.now()
        done = Subscriber.objects.filter(pk=self.pk, status=self.Status.PENDING).update(
            status=self.Status.CONFIRMED, confirmed_at=now
        )
        self.refresh_from_db()
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
        the admin's history entries, whose titles hold the address, and
        the address in the errors of their deliveries and digests (servers
        echo the recipient in refusals).

        Nothing not yet sent to them is sent: their pending deliveries and
        digests are skipped first, which also lets a mailing waiting only
        for them finish (an erased reader's row keeps the mailing's counts,
        not the address). A batch that claimed one a moment before
        re-checks its readers as it goes (transports.deliver).
        """
        with transaction.atomic():
            if apps.is_installed("django.contrib.admin"):
                from django.contrib.admin.models import LogEntry
                from django.contrib.contenttypes.models import ContentType

                LogEntry.objects.filter(
                    content_type=ContentType.objects.get_for_model(Subscriber),
                    object_id=str(self.pk),
                ).delete()
            mailings = set(
                self.deliveries.filter(
                    status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING]
                ).values_list("mailing", flat=True)
            )
            for model in (Delivery, Digest):
                rows = model.objects.filter(subscriber=self)
                S = model.Status
                rows.filter(
                    status__in=[S.PENDING, S.SENDING, *([S.DIGEST] if model is Delivery else [])]
                ).update(status=S.SKIPPED, claim="")
                echoed = [
                    r
                    for r in rows.exclude(error="").only("error")
                    if self.email.lower() in r.error.lower()
                ]
                for row in echoed:
                    row.error = re.sub(
                        re.escape(self.email), "[erased]", row.error, flags=re.IGNORECASE
                    )
                model.objects.bulk_update(echoed, ["error"])
            self.delete()
            for mailing in Mailing.objects.filter(pk__in=mailings):
                mailing.finish_if_done()

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


# Delivery: one Mailing per post, one Delivery per (mailing, reader), one
# Digest per (reader, period). Every message goes through a claim (a
# conditional update) and every outcome is written in bulk.

MAX_ID = 2**63 - 1


def _due():
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())


class SendableQuerySet(models.QuerySet):
    """What Delivery and Digest share: claiming work and recording outcomes."""

    def claim(self, limit):
        """Take up to `limit` due pending rows of this queryset for this
        worker with one conditional update: two workers never get the same
        row. Returns the claimed rows."""
        Status = self.model.Status
        now = timezone.now()
        token = secrets.token_hex(8)
        ids = list(
            self.filter(_due(), status=Status.PENDING)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not ids or not self.model.objects.filter(pk__in=ids, status=Status.PENDING).update(
            status=Status.SENDING, claim=token, claimed_at=now
        ):
            return []
        return list(
            self.model.objects.filter(claim=token).select_related("subscriber").order_by("pk")
        )

    def record(self, outcome, claim):
        """Write a batch's Outcome in a constant number of queries. Only rows
        this batch still holds (`claim`) are written: a row the sweeper took
        back meanwhile is not this batch's to change."""
        Status = self.model.Status
        mine = self.filter(claim=claim, status=Status.SENDING)
        ambiguous = [i.pk for i in outcome.sent if i.ambiguous]
        if ambiguous:  # accepted, by an answer we could not read
            mine.filter(pk__in=ambiguous).update(ambiguous=True)
        if outcome.sent:
            mine.filter(pk__in=[i.pk for i in outcome.sent]).update(
                status=Status.SENT, sent_at=timezone.now(), claim=""
            )
        if outcome.skipped:
            mine.filter(pk__in=[i.pk for i in outcome.skipped]).update(
                status=Status.SKIPPED, claim=""
            )
        if outcome.unsent:
            mine.filter(pk__in=[i.pk for i in outcome.unsent]).update(
                status=Status.PENDING, claim=""
            )
        changed = outcome.retry + outcome.failed
        if changed:
            held = set(mine.filter(pk__in=[i.pk for i in changed]).values_list("pk", flat=True))
            for item in outcome.retry:
                item.status, item.claim = Status.PENDING, ""
            for item in outcome.failed:
                item.status, item.claim = Status.FAILED, ""
            fields = [
                "status",
                "claim",
                "attempts",
                "next_attempt_at",
                "error",
                "permanent",
                "ambiguous",
            ]
            self.bulk_update([i for i in changed if i.pk in held], fields, batch_size=1000)

    def waiting(self):
        """{"count", "due", "next"}: how many rows of this queryset are
        pending, how many of them are due now, and when the first retry is."""
        return self.filter(status=self.model.Status.PENDING).aggregate(
            count=Count("pk"), due=Count("pk", filter=_due()), next=Min("next_attempt_at")
        )

    def stale(self, limit=10000):
        """Ids of rows claimed longer than CLAIM_TIMEOUT ago: their worker
        died or lost its broker."""
        before = timezone.now() - conf.duration("CLAIM_TIMEOUT")
        return list(
            self.filter(status=self.model.Status.SENDING, claimed_at__lt=before).values_list(
                "pk", flat=True
            )[:limit]
        )

    def release(self, ids, sent, due_at=None):
        """Take back stale claims: rows among `ids` whose message is known
        to have been accepted (`sent`, from the send journal) are recorded
        as sent, the rest go back to pending (due at `due_at`, if given).
        Returns how many went back."""
        Status = self.model.Status
        sent = set(sent)
        if sent:
            self.filter(pk__in=sent, status=Status.SENDING).update(
                status=Status.SENT, sent_at=timezone.now(), claim=""
            )
        due = {"next_attempt_at": due_at} if due_at else {}
        return self.filter(
            pk__in=[pk for pk in ids if pk not in sent], status=Status.SENDING
        ).update(status=Status.PENDING, claim="", **due)

    def still_held(self, claim, subscriber_ids):
        """The ids among `subscriber_ids` of readers still confirmed whose
        row the batch holding `claim` still holds (the sweeper may have
        taken it back, believing the batch dead): a batch goes on with
        those only."""
        return set(
            self.filter(
                claim=claim,
                status=self.model.Status.SENDING,
                subscriber__status=Subscriber.Status.CONFIRMED,
                subscriber_id__in=list(subscriber_ids),
            ).values_list("subscriber_id", flat=True)
        )


class Sendable(models.Model):
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    permanent = models.BooleanField(default=False, help_text="Refused for good (5xx).")
    ambiguous = models.BooleanField(
        default=False,
        help_text="An attempt lost its connection after the whole message was sent and "
        "before the server answered: the server may have accepted it, and the retry "
        "may have delivered it a second time.",
    )
    error = models.CharField(max_length=500, blank=True)
    claim = models.CharField(max_length=16, blank=True, editable=False)
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class MailingQuerySet(models.QuerySet):
    def sending(self):
        """Mailings whose work may go on: not paused, done or deleted."""
        return self.filter(status__in=[Mailing.Status.QUEUED, Mailing.Status.SENDING])

    def with_progress(self):
        """sent/failed/pending/digest/skipped counts, and how many had an
        ambiguous attempt, in the same query."""
        S = Delivery.Status

        def count(*statuses):
            return Count("deliveries", filter=Q(deliveries__status__in=statuses))

        return self.annotate(
            sent_count=count(S.SENT),
            failed_count=count(S.FAILED),
            pending_count=count(S.PENDING, S.SENDING),
            digest_count=count(S.DIGEST),
            skipped_count=count(S.SKIPPED),
            ambiguous_count=Count("deliveries", filter=Q(deliveries__ambiguous=True)),
        )


class Mailing(models.Model):
    """The email of one post: a frozen snapshot, sent to each matching
    confirmed reader once. Unique per post, so announcing a post twice, or
    from two processes at once, never makes a second mailing."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        PAUSED = "paused", "Paused"
        DONE = "done", "Done"

    post_key = models.CharField(
        max_length=200, unique=True, help_text="Which post this is, e.g. newsroom.article:12."
    )
    title = models.CharField(max_length=300)
    url = models.URLField(max_length=500)
    summary = models.TextField(blank=True)
    topics = models.JSONField(default=list, blank=True, help_text="The post's topic keys.")
    published_at = models.DateTimeField(null=True, blank=True)
    # The snapshot, rendered once by announce; the reader's links are
    # placeholders filled in for each message (emails.MessageTemplate).
    subject = models.CharField(max_length=300)
    text = models.TextField()
    html = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    fanout_cursor = models.BigIntegerField(
        default=0, help_text="Readers up to this id have their deliveries recorded."
    )
    fanout_done = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    progress_at = models.DateTimeField(
        default=timezone.now, help_text="The last time a worker moved this mailing forward."
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = MailingQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # delivery.sweep: mailings in flight that made no progress lately.
            models.Index(fields=["status", "progress_at"], name="mailing_inflight_idx"),
        ]

    def __str__(self):
        return self.title

    @staticmethod
    def key_for(post):
        meta = getattr(post, "_meta", None)
        kind = meta.label_lower if meta else f"{type(post).__module__}.{type(post).__qualname__}"
        return f"{kind}:{post.pk}"

    def recipients(self):
        """The readers this post goes to, whatever their frequency: those
        following it who were confirmed when it went live (announced). The
        audience is fixed then: a fan-out that runs late (a broker that was
        down) does not add a reader who confirmed since; they see the post
        on the site and get the next one."""
        return (
            Subscriber.objects.confirmed()
            .following(self.topics)
            .filter(Q(confirmed_at__isnull=True) | Q(confirmed_at__lte=self.created_at))
        )

    def start(self):
        """Queued → sending (the fan-out has begun)."""
        Mailing.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.SENDING
        )

    def add_deliveries(self):
        """Record a Delivery for each of the next BATCH_SIZE matching readers
        after the fan-out cursor (readers are walked in id order: constant
        memory), and move the cursor past them. Returns (first, last,
        any_instant) for those readers, or None once every reader has one
        (fanout_done is then set).

        Starts from fanout_cursor as this instance read it (load the
        mailing afresh to resume after a crash: the unique (mailing,
        subscriber) constraint makes a chunk recorded twice harmless).
        """
        instant = Subscriber.Frequency.INSTANT
        rows = list(
            self.recipients()
            .filter(pk__gt=self.fanout_cursor)
            .order_by("pk")
            .values_list("pk", "frequency")[: conf.BATCH_SIZE]
        )
        if not rows:
            Mailing.objects.filter(pk=self.pk).update(fanout_done=True, progress_at=timezone.now())
            self.fanout_done = True
            return None
        Delivery.objects.bulk_create(
            [
                Delivery(
                    mailing=self,
                    subscriber_id=pk,
                    status=Delivery.Status.PENDING
                    if frequency == instant
                    else Delivery.Status.DIGEST,
                )
                for pk, frequency in rows
            ],
            ignore_conflicts=True,
        )
        first, last = rows[0][0], rows[-1][0]
        Mailing.objects.filter(pk=self.pk).update(fanout_cursor=last, progress_at=timezone.now())
        self.fanout_cursor = last
        return first, last, any(frequency == instant for _, frequency in rows)

    def deliveries_between(self, first, last):
        """The deliveries of readers with ids first..last: one batch's range."""
        return Delivery.objects.filter(
            mailing=self, subscriber_id__gte=first, subscriber_id__lte=last
        )

    def moved(self):
        """Note that a worker moved this mailing forward (the sweeper
        requeues mailings that made no progress for CLAIM_TIMEOUT)."""
        Mailing.objects.filter(pk=self.pk).update(progress_at=timezone.now())

    def has_work_due(self):
        """Whether something can be done for this mailing now: its fan-out
        is unfinished, or a delivery is pending and due."""
        return not self.fanout_done or (
            self.deliveries.filter(_due(), status=Delivery.Status.PENDING).exists()
        )

    def finish_if_done(self):
        """Mark the mailing done once its fan-out is complete and no delivery
        is pending or being sent."""
        unfinished = Delivery.objects.filter(
            mailing=self, status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING]
        )
        return bool(
            Mailing.objects.filter(
                pk=self.pk, fanout_done=True, status__in=[self.Status.QUEUED, self.Status.SENDING]
            )
            .exclude(Exists(unfinished))
            .update(status=self.Status.DONE, finished_at=timezone.now())
        )

    def withdraw(self):
        """The post was taken down: stop sending it. The mailing is paused
        (an editor may resume it) and nobody's digest will list it."""
        self.pause()
        # Also those already in a digest not yet sent: a digest lists only
        # deliveries still waiting (and is skipped when none are left).
        Delivery.objects.filter(mailing=self, status=Delivery.Status.DIGEST).update(
            status=Delivery.Status.SKIPPED
        )

    def pause(self):
        return bool(
            Mailing.objects.filter(
                pk=self.pk, status__in=[self.Status.QUEUED, self.Status.SENDING]
            ).update(status=self.Status.PAUSED)
        )

    def resume(self):
        """Paused → sending (delivery.resume then queues its work again)."""
        return bool(
            Mailing.objects.filter(pk=self.pk, status=self.Status.PAUSED).update(
                status=self.Status.SENDING, progress_at=timezone.now()
            )
        )

    def retry_failed(self):
        """Failed deliveries to readers still confirmed go back to pending
        (delivery.retry_failed then queues them); returns how many."""
        count = Delivery.objects.filter(
            mailing=self,
            status=Delivery.Status.FAILED,
            subscriber__status=Subscriber.Status.CONFIRMED,
        ).update(
            status=Delivery.Status.PENDING,
            attempts=0,
            next_attempt_at=None,
            error="",
            permanent=False,
        )
        if count:
            Mailing.objects.filter(pk=self.pk, status=self.Status.DONE).update(
                status=self.Status.SENDING, finished_at=None, progress_at=timezone.now()
            )
        return count


class Delivery(Sendable):
    """One post for one reader: the ledger that makes sending exactly-once."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped: left before it was sent"
        DIGEST = "digest", "Waiting for the reader's digest"

    mailing = models.ForeignKey(Mailing, on_delete=models.CASCADE, related_name="deliveries")
    # SET_NULL: erasing a reader keeps the mailing's counts, not the address.
    subscriber = models.ForeignKey(
        Subscriber, null=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    digest = models.ForeignKey(
        "Digest", null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)

    objects = SendableQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["mailing", "subscriber"], name="unique_delivery"),
        ]
        indexes = [
            # delivery.send_mailing_batch: a mailing's pending deliveries in a reader-id range.
            models.Index(fields=["mailing", "status", "subscriber"], name="delivery_batch_idx"),
            # SendableQuerySet.stale: old claims.
            models.Index(fields=["status", "claimed_at"], name="delivery_stale_idx"),
            # DigestQuerySet.create_due: deliveries waiting for a digest.
            models.Index(fields=["status", "digest", "created_at"], name="delivery_digest_idx"),
            # Sendable.claim: rows this worker claimed.
            models.Index(fields=["claim"], name="delivery_claim_idx"),
        ]

    def __str__(self):
        return f"{self.mailing} → {self.subscriber or 'erased reader'}"


def digest_periods(now=None):
    """[(frequencies, period key, cut-off)] of the digests due at `now`: the
    latest daily send time (DIGEST_HOUR in the site's time zone) and the
    latest weekly one (on DIGEST_WEEKDAY). A digest holds the posts waiting
    at its cut-off; a period's key is the date of its send time, so a
    reader gets one digest per period however often this runs."""
    local = timezone.localtime(now or timezone.now())
    send_date = local.date() if local.hour >= conf.DIGEST_HOUR else local.date() - timedelta(days=1)
    weekly_date = send_date - timedelta(days=(send_date.weekday() - conf.DIGEST_WEEKDAY) % 7)

    def at(day):
        return timezone.make_aware(datetime.combine(day, time(conf.DIGEST_HOUR)))

    F = Subscriber.Frequency
    return [
        # A reader who left the weekly digest for instant mail gets what was
        # waiting in the next daily one.
        ([F.DAILY, F.INSTANT], f"daily:{send_date}", at(send_date)),
        ([F.WEEKLY], f"weekly:{weekly_date}", at(weekly_date)),
    ]


class DigestQuerySet(SendableQuerySet):
    def create_due(self, now=None):
        """Make the digests due now (one per reader and period, for readers
        with posts waiting at the period's cut-off) and attach the waiting
        deliveries to them; streams readers in chunks. Returns how many
        digests were created."""
        created = 0
        for frequencies, period, cutoff in digest_periods(now):
            waiting = Delivery.objects.filter(
                status=Delivery.Status.DIGEST,
                digest__isnull=True,
                created_at__lte=cutoff,
                subscriber__status=Subscriber.Status.CONFIRMED,
                subscriber__frequency__in=frequencies,
            ).exclude(
                # Posts from before a reader left and came back stay unsent.
                mailing__created_at__lt=F("subscriber__confirmed_at")
            )
            cursor = 0
            while readers := list(
                waiting.filter(subscriber_id__gt=cursor)
                .order_by("subscriber_id")
                .values_list("subscriber_id", flat=True)
                .distinct()[: conf.BATCH_SIZE]
            ):
                new = self.bulk_create(
                    [Digest(subscriber_id=pk, period=period) for pk in readers],
                    ignore_conflicts=True,
                )
                created += len(new)
                cursor = readers[-1]
            # A reader whose digest for this period went out already keeps
            # late posts for the next one: only pending digests take them.
            waiting.update(
                digest=Subquery(
                    Digest.objects.filter(
                        subscriber=OuterRef("subscriber"),
                        period=period,
                        status=Digest.Status.PENDING,
                    ).values("pk")[:1]
                )
            )
        return created

    def posts_of(self, digests):
        """({digest id: [Mailing, …]}, {digest id: [Delivery id, …]}): the
        posts each digest lists (its deliveries still waiting, oldest post
        first) and those deliveries, in two queries. Each post is loaded
        once, without its email snapshot, however many digests list it:
        500 weekly readers of 100 posts hold 100 Mailings, not 50,000."""
        waiting = Delivery.objects.filter(
            digest__in=digests, status=Delivery.Status.DIGEST
        ).order_by("mailing__published_at", "mailing_id")
        rows = list(waiting.values_list("digest_id", "mailing_id", "pk"))
        mailings = Mailing.objects.defer("subject", "text", "html").in_bulk(
            {mailing for _, mailing, _ in rows}
        )
        posts, listed = {}, {}
        for digest, mailing, pk in rows:
            posts.setdefault(digest, []).append(mailings[mailing])
            listed.setdefault(digest, []).append(pk)
        return posts, listed

    def follows_of(self, digests):
        """{digest id: [topic key, …]} of the readers who follow topics, in
        one query (readers who follow everything are left out)."""
        readers = {
            d.subscriber_id: d.pk
            for d in digests
            if d.subscriber is not None and not d.subscriber.follows_everything
        }
        follows = {}
        for reader, topic in Follow.objects.filter(subscriber__in=list(readers)).values_list(
            "subscriber", "topic"
        ):
            follows.setdefault(readers[reader], []).append(topic)
        return follows

    def record_listed(self, outcome, listed):
        """A digest's deliveries take its outcome: those it listed
        (`listed`, from posts_of). A post attached to it while it was being
        sent (create_due racing the claim, on a database that lets it) was
        not listed: it is detached, to wait for the reader's next digest
        instead of waiting for ever."""
        S = Delivery.Status
        done = []
        for items, status, fields in (
            (outcome.sent, S.SENT, {"sent_at": timezone.now()}),
            (outcome.skipped, S.SKIPPED, {}),
            (outcome.failed, S.FAILED, {}),
        ):
            shown = [pk for digest in items for pk in listed.get(digest.pk, [])]
            if shown:
                Delivery.objects.filter(pk__in=shown).update(status=status, **fields)
            done += items
        if done:
            Delivery.objects.filter(digest__in=done, status=S.DIGEST).update(digest=None)

    def release(self, ids, sent, due_at=None):
        """As SendableQuerySet.release; a digest the journal says was sent
        takes its waiting deliveries with it (they were in it)."""
        released = super().release(ids, sent, due_at)
        if sent:
            Delivery.objects.filter(digest__in=list(sent), status=Delivery.Status.DIGEST).update(
                status=Delivery.Status.SENT, sent_at=timezone.now()
            )
        return released


class Digest(Sendable):
    """A daily or weekly email listing the posts waiting for one reader."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped: left before it was sent"

    subscriber = models.ForeignKey(
        Subscriber, null=True, on_delete=models.SET_NULL, related_name="digests"
    )
    period = models.CharField(
        max_length=20, help_text="e.g. daily:2026-11-29 or weekly:2026-11-23."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)

    objects = DigestQuerySet.as_manager()

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.UniqueConstraint(fields=["subscriber", "period"], name="unique_digest"),
        ]
        indexes = [
            models.Index(fields=["status", "claimed_at"], name="digest_stale_idx"),
            models.Index(fields=["claim"], name="digest_claim_idx"),
        ]

    def __str__(self):
        return f"{self.period} → {self.subscriber or 'erased reader'}"
