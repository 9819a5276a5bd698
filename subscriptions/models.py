"""The tables and their state changes: subscribers, what they follow and
their consent; mailings and the delivery ledger (Delivery, Digest).

Nothing here queues work or sends email: delivery.py does, calling these.
"""

import contextlib
import re
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connections, models, transaction
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    Lookup,
    Max,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
    sql,
)
from django.db.models.base import ModelState
from django.db.models.constants import OnConflict
from django.db.models.functions import Coalesce
from django.db.models.signals import post_save, pre_save
from django.urls import reverse
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
            .update(status=Subscriber.Status.SUPPRESSED, suppressed_at=timezone.now())
        )

    # Confirmation reminders and the clean-up of old pending addresses
    # (delivery.remind_pending, delivery.delete_stale_pending).

    def pending_since(self, before, after=None):
        """Pending addresses whose confirmation email (or, without one, the
        row) dates from before `before` (and from `after` on)."""
        rows = self.filter(status=Subscriber.Status.PENDING).alias(
            since=Coalesce("confirmation_sent_at", "created_at")
        )
        rows = rows.filter(since__lt=before)
        return rows.filter(since__gte=after) if after else rows

    def claim_reminders(self, before, after, limit):
        """Mark up to `limit` pending addresses not yet reminded, whose
        confirmation email went out between `after` and `before`, as
        reminded now; returns their ids. A conditional update: two runs at
        once never remind one address twice, and an address is reminded once
        for good."""
        ids = list(
            self.pending_since(before, after)
            .filter(reminded_at__isnull=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return []
        stamp = timezone.now()
        self.filter(pk__in=ids, status=Subscriber.Status.PENDING, reminded_at__isnull=True).update(
            reminded_at=stamp
        )
        return list(self.filter(pk__in=ids, reminded_at=stamp).values_list("pk", flat=True))

    def delete_pending(self, before, limit=1000):
        """Delete up to `limit` addresses still pending whose confirmation
        email is older than `before`; returns how many. They never
        confirmed, so nothing was sent to them but that email: the row, its
        follows and the admin history naming it go. The rare one with
        deliveries (confirmed once, left, signed up again) is erased as a
        reader asking for it would be (Subscriber.erase)."""
        ids = list(self.pending_since(before).values_list("pk", flat=True)[:limit])
        if not ids:
            return 0
        with_history = set(
            Delivery.objects.filter(subscriber__in=ids).values_list("subscriber", flat=True)
        ) | set(Digest.objects.filter(subscriber__in=ids).values_list("subscriber", flat=True))
        erased = 0
        for subscriber in self.filter(pk__in=with_history).pending_since(before):
            subscriber.erase()
            erased += 1
        plain = [pk for pk in ids if pk not in with_history]
        with transaction.atomic():
            # Locked and re-checked: an address confirmed a moment ago is kept.
            plain = list(
                self.filter(pk__in=plain)
                .pending_since(before)
                .select_for_update()
                .values_list("pk", flat=True)
            )
            _delete_admin_history(plain)
            deleted = Subscriber.objects.filter(pk__in=plain).delete()[1]
        return deleted.get(Subscriber._meta.label, 0) + erased

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
        pending exactly when this sign-up was recorded. A new address's
        confirmation email is claimed in the same INSERT (its
        confirmation_sent_at is now): `subscriber.confirmation_claimed`
        then says so, and claim_confirmation() need not be asked.
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
        # A new address, the common case (a viral article's sign-ups): one
        # INSERT, nothing read before it and no follows to clear after.
        # Outside a transaction it is its own (autocommit): the database's
        # write lock is held for that statement and its commit, not for the
        # Python around it. Its follows, if any, go in one transaction with
        # it; inside the caller's transaction a savepoint catches a conflict.
        own = topics or transaction.get_connection(self.db).in_atomic_block
        try:
            with transaction.atomic(using=self.db) if own else contextlib.nullcontext():
                subscriber = self._insert_one(
                    email=email,
                    status=Status.PENDING,
                    confirmation_sent_at=fields["consent_at"],
                    **fields,
                )
                Follow.objects.bulk_create([Follow(subscriber=subscriber, topic=t) for t in topics])
        except IntegrityError:  # the address is known (the unique email)
            pass
        else:
            subscriber.confirmation_claimed = True
            return subscriber
        with transaction.atomic(using=self.db):
            subscriber = self.get(email=email)
            updated = self.filter(
                pk=subscriber.pk, status__in=[Status.PENDING, Status.UNSUBSCRIBED]
            ).update(status=Status.PENDING, **fields)
            if not updated:
                return subscriber
            subscriber.refresh_from_db()
            subscriber.set_follows(topics)
        return subscriber

    def _insert_one(self, **values):
        """Subscriber.objects.create(**values), with the INSERT statement
        that create() makes compiled once per database: compiling it was
        half the CPU time of a new address's sign-up. Each value is still
        prepared by its field (pre_save, get_db_prep_save), as create()
        does. With a pre_save or post_save receiver for Subscriber, or a
        database that cannot return the new id from the INSERT, it is
        create() itself."""
        model = self.model
        connection = connections[self.db]
        insert = _insert_statement(model, connection)
        if insert is None or any(s.has_listeners(model) for s in (pre_save, post_save)):
            return self.create(**values)
        statement, fields, returning = insert
        instance = model(**values)
        params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            row = connection.ops.fetch_returned_insert_columns(cursor, ())
        for field, value in zip(returning, row, strict=True):
            setattr(instance, field.attname, value)
        instance._state.adding, instance._state.db = False, self.db
        return instance


# (model, database alias, vendor): (sql, fields, returning fields) of the
# INSERT that Model.save() runs for a new row, or None (_insert_statement).
_INSERT_STATEMENTS = {}


def _insert_statement(model, connection):
    """The INSERT that Model.save() runs for a new `model` row on
    `connection`, as Django's compiler makes it, with one plain
    placeholder a field: (sql, fields in order, returning fields); None
    where that is not how save() inserts (no INSERT ... RETURNING)."""
    key = (model, connection.alias, connection.vendor)
    if key not in _INSERT_STATEMENTS:
        meta = model._meta
        fields = [
            f for f in meta.local_concrete_fields if f is not meta.auto_field and not f.generated
        ]
        returning = meta.db_returning_fields
        found = None
        if connection.features.can_return_columns_from_insert:
            query = sql.InsertQuery(model)
            query.insert_values(fields, [model()])
            compiler = query.get_compiler(connection=connection)
            compiler.returning_fields = returning
            [(statement, params)] = compiler.as_sql()
            plain = len(params) == statement.count("%s") == len(fields)
            if plain and not compiler.returning_params:
                found = statement, fields, returning
        _INSERT_STATEMENTS[key] = found
    return _INSERT_STATEMENTS[key]


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
    reminded_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the one reminder to confirm was sent (pending addresses only).",
    )
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    suppressed_at = models.DateTimeField(null=True, blank=True)
    stats_opt_out = models.BooleanField(
        "not counted individually",
        default=False,
        help_text="The reader asked that their opens and clicks not be recorded as theirs "
        "(they still count, anonymously, in each mailing's totals).",
    )

    objects = SubscriberQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Mailing.add_deliveries: confirmed readers walked in id order
            # from the fan-out cursor (status=confirmed, id > cursor ORDER BY
            # id LIMIT BATCH_SIZE) without sorting every confirmed reader.
            models.Index(fields=["status", "id"], name="subscriber_audience_idx"),
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
        """The links a post or digest carries."""
        return self.email_links_maker()(self)

    @classmethod
    def email_links_maker(cls):
        """email_links() as a function of the subscriber, for thousands of
        readers: two signatures each, no URL resolving, and what every
        reader's links share (the HMACs, the site, the paths around the
        tokens) looked up once."""
        tokens_of, links = cls.email_tokens_maker()
        (unsubscribe, _, u), (one_click, _, o), (preferences, _, p) = (
            links[name] for name in ("UNSUBSCRIBE", "ONECLICK", "PREFERENCES")
        )

        def email_links(subscriber):
            found = tokens_of(subscriber)
            token, preferences_token = found["t"], found["p"]
            return {
                "UNSUBSCRIBE": f"{unsubscribe}{token}{u}",
                "ONECLICK": f"{one_click}{token}{o}",
                "PREFERENCES": f"{preferences}{preferences_token}{p}",
            }

        return email_links

    @classmethod
    def email_tokens_maker(cls):
        """email_links() cut at its tokens, for a provider's batch call that
        writes the site and paths once and sends each reader only their
        tokens: (tokens, links), where tokens(subscriber) is {"t": the
        unsubscribe and one-click token (one for both), "p": the preferences
        token} and links {name of email_links(): (before, token name,
        after)}, each link being before + tokens[token name] + after."""
        sign = tokens.signer((cls.UNSUBSCRIBE, cls.PREFERENCES))

        def tokens_of(subscriber):
            token, preferences_token = sign(subscriber.key)
            return {"t": token, "p": preferences_token}

        links = {}
        for name, url_name, key in (
            ("UNSUBSCRIBE", "unsubscribe", "t"),
            ("ONECLICK", "one_click", "t"),
            ("PREFERENCES", "preferences", "p"),
        ):
            before, after = tokens.around(url_name)
            links[name] = (before, key, after)
        return tokens_of, links

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
            .update(status=self.Status.SUPPRESSED, suppressed_at=timezone.now())
        )
        self.refresh_from_db()
        return bool(done)

    def update_preferences(self, *, name, frequency, topics, stats_opt_out=None):
        fields = {"name": clean_name(name), "frequency": frequency}
        if stats_opt_out is not None:  # Only asked when per-reader stats are on.
            fields["stats_opt_out"] = stats_opt_out
        Subscriber.objects.filter(pk=self.pk).update(**fields)
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
            _delete_admin_history([self.pk])
            mailings = set(
                self.deliveries.filter(
                    status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING]
                ).values_list("mailing", flat=True)
            )
            # Deliveries last: their move locks mailings, which a digest
            # batch takes after its digest (record, then record_listed).
            for model in (Digest, CorrectionDelivery, Delivery):
                rows = model.objects.filter(subscriber=self)
                S = model.Status
                unsent = rows.filter(
                    status__in=[S.PENDING, S.SENDING, *([S.DIGEST] if model is Delivery else [])]
                )
                if model is Delivery:  # a done mailing's stored counts move too
                    unsent.move(S.SKIPPED, claim="")
                else:
                    unsent.update(status=S.SKIPPED, claim="")
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
            "suppressed_at": iso(self.suppressed_at),
            "not_counted_individually": self.stats_opt_out,
            # Per-reader engagement stats, when the site records them.
            "opens_and_clicks": [
                {
                    "mailing": title,
                    "kind": kind,
                    "link": links[link] if 0 <= link < len(links) else None,
                    "at": iso(at),
                }
                for title, links, kind, link, at in self.stat_events.values_list(
                    "mailing__title", "mailing__links", "kind", "link", "at"
                )
            ],
        }


def _delete_admin_history(subscriber_ids):
    """The admin's history entries of these subscribers: their titles hold
    the address."""
    if subscriber_ids and apps.is_installed("django.contrib.admin"):
        from django.contrib.admin.models import LogEntry
        from django.contrib.contenttypes.models import ContentType

        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Subscriber),
            object_id__in=[str(pk) for pk in subscriber_ids],
        ).delete()


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


class _AmongArray(Lookup):
    """`lhs = ANY(ARRAY(subquery))`, for PostgreSQL: the ids are chosen
    once (an InitPlan) and each row is found by its primary key. With `pk
    IN (subquery)` the planner may join the subquery to a sequential scan
    of the whole table: a claim of a few thousand rows then reads every
    delivery of every mailing, and a mailing's claims grow with the square
    of its readers."""

    lookup_name = "among_array"

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = compiler.compile(self.rhs)  # "(SELECT ...)"
        return f"{lhs} = ANY(ARRAY{rhs})", (*lhs_params, *rhs_params)


def _due():
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())


# Subscriber fields a batch never reads (SendableQuerySet.claim defers them).
SENDING_DEFERS = [
    "frequency",  # (a digest's frequency is its period's; follows_everything is read)
    "consent_at",
    "consent_ip",
    "consent_user_agent",
    "consent_page",
    "consent_wording",
    "created_at",
    "confirmation_sent_at",
    "confirmed_at",
    "unsubscribed_at",
    "reminded_at",
    "suppressed_at",
]
# A batch's own row's fields it never reads (written by record(), not read).
SENDING_DEFERS_OWN = ["created_at", "sent_at"]


def _with_readers(rows, **known):
    """The rows of `rows` (a Sendable queryset), each with its subscriber, as
    select_related("subscriber") with SENDING_DEFERS deferred gives them,
    from one values_list() query. Django builds a model instance through
    from_db() and __init__(), which for a batch of a thousand rows (two
    thousand instances) costs five times the query itself; these are made
    as Django's deferred loading leaves them, the loaded fields in the
    instance's __dict__ (a field not there is deferred and loads on first
    use), with the same values (values_list() applies the same converters).
    `known`: fields whose value every row has, set rather than loaded.
    """
    model, db = rows.model, rows.db
    own = [
        f.attname
        for f in model._meta.concrete_fields
        if f.name not in SENDING_DEFERS_OWN and f.attname not in known
    ]
    theirs = [f.attname for f in Subscriber._meta.concrete_fields if f.name not in SENDING_DEFERS]
    split = len(own)
    items = []
    for values in rows.values_list(*own, *(f"subscriber__{name}" for name in theirs)):
        item = _loaded(model, db, zip(own, values, strict=False))  # stops at its own
        item.__dict__.update(known)
        item._state.fields_cache = {
            "subscriber": None
            if values[split] is None
            else _loaded(Subscriber, db, zip(theirs, values[split:], strict=True))
        }
        items.append(item)
    return items


def _loaded(model, db, fields):
    """An instance of `model` loaded from database `db` with `fields`
    ((attname, value) pairs), without __init__: what from_db() returns."""
    instance = model.__new__(model)
    instance.__dict__.update(fields)
    state = instance._state = ModelState.__new__(ModelState)
    state.adding, state.db = False, db
    return instance


class SendableQuerySet(models.QuerySet):
    """What Delivery and Digest share: claiming work and recording outcomes."""

    def claim(self, limit):
        """Take up to `limit` due pending rows of this queryset for this
        worker with one conditional update: two workers never get the same
        row. Returns the claimed rows."""
        Status = self.model.Status
        now = timezone.now()
        token = secrets.token_hex(8)
        # One statement: the ids are chosen inside the database (UPDATE ...
        # WHERE id IN (SELECT ... LIMIT n)), not sent back and forth.
        due = self.filter(_due(), status=Status.PENDING).order_by("pk").values("pk")[:limit]
        chosen = Q(pk__in=due)
        if connections[self.db].vendor == "postgresql":
            chosen = _AmongArray(F("pk"), Subquery(due))
        if not self.model.objects.filter(chosen, status=Status.PENDING).update(
            status=Status.SENDING, claim=token, claimed_at=now
        ):
            return []
        return _with_readers(
            self.model.objects.filter(claim=token, status=Status.SENDING).order_by("pk"),
            # What the update wrote: not read back (a date costs a parse a row).
            claimed_at=now,
        )

    def insert_from(self, source, **columns):
        """INSERT INTO this table SELECT `columns` (expressions over the
        rows of `source`, a queryset of another model) FROM source, in one
        statement; rows that would break a unique constraint are skipped,
        as bulk_create(ignore_conflicts=True) does. Every other column gets
        its field's default, computed once."""
        fields = [f for f in self.model._meta.concrete_fields if not f.primary_key]
        values = {}
        for field in fields:
            expression = columns.pop(field.attname, None)
            if expression is None:
                expression = Value(field.get_default(), output_field=field)
            values[f"insert_{field.attname}"] = expression
        if columns:
            raise TypeError(f"Unknown columns: {sorted(columns)}")
        select = source.order_by().annotate(**values).values_list(*values)
        sql, params = select.query.get_compiler(using=self.db).as_sql()
        connection = connections[self.db]
        ops = connection.ops
        on_conflict = OnConflict.IGNORE
        statement = " ".join(
            [
                ops.insert_statement(on_conflict=on_conflict),
                ops.quote_name(self.model._meta.db_table),
                "(" + ", ".join(ops.quote_name(f.column) for f in fields) + ")",
                sql,
                ops.on_conflict_suffix_sql(fields, on_conflict, None, None),
            ]
        )
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.rowcount

    def record(self, outcome, claim, claimed=None):
        """Write a batch's Outcome in a constant number of queries. Only rows
        this batch still holds (`claim`) are written: a row the sweeper took
        back meanwhile is not this batch's to change. `claimed`: how many
        rows the claim took; when the outcome is every one of them sent,
        they are written as one (no list of ids)."""
        Status = self.model.Status
        mine = self.filter(claim=claim, status=Status.SENDING)
        ambiguous = [i.pk for i in outcome.sent if i.ambiguous]
        if ambiguous:  # accepted, by an answer we could not read
            mine.filter(pk__in=ambiguous).update(ambiguous=True)
        everyone = len({i.pk for i in outcome.sent}) == claimed and not (
            outcome.skipped or outcome.unsent or outcome.retry or outcome.failed
        )
        if everyone:
            mine.update(status=Status.SENT, sent_at=timezone.now(), claim="")
        elif outcome.sent:
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

    def release(self, ids, sent, due_at=None):
        """Take back stale claims: rows among `ids` whose message is known
        to have been accepted (`sent`, from the send journal) are recorded
        as sent, the rest go back to pending, due at `due_at` (default now).
        A row taken back always has a next_attempt_at: that is how the
        next batch knows to ask the journal about it (delivery._journaled).
        Returns how many went back."""
        Status = self.model.Status
        sent = set(sent)
        if sent:
            self.filter(pk__in=sent, status=Status.SENDING).update(
                status=Status.SENT, sent_at=timezone.now(), claim=""
            )
        return self.filter(
            pk__in=[pk for pk in ids if pk not in sent], status=Status.SENDING
        ).update(status=Status.PENDING, claim="", next_attempt_at=due_at or timezone.now())

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
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class MailingQuerySet(models.QuerySet):
    def sending(self):
        """Mailings whose work may go on: not paused, done or deleted."""
        return self.filter(status__in=[Mailing.Status.QUEUED, Mailing.Status.SENDING])

    def with_progress(self):
        """sent/failed/pending/digest/skipped counts, and how many had an
        ambiguous attempt, in the same query.

        A done mailing's counts are the ones stored on it (done_sent and
        friends: stored when it finished, moved with each later change of
        its deliveries, see DeliveryQuerySet.move): reading them costs the
        same at a hundred readers or a million. A mailing in flight (only a
        few at once) is counted: each count is a subquery over one
        mailing's rows of one status (delivery_batch_idx: an index-only
        count), not a join grouped by every column of the mailing (SQLite
        groups by all of them, its email snapshot included: 4 s for one
        mailing of a million). CASE evaluates only the branch it takes, so
        a done mailing's rows are not counted."""
        S = Delivery.Status
        stored = Q(status=Mailing.Status.DONE, done_sent__isnull=False)

        def count(field, **where):
            rows = (
                Delivery.objects.filter(mailing=OuterRef("pk"), **where)
                .order_by()
                .values("mailing")
                .annotate(n=Count("pk"))
                .values("n")
            )
            live = Coalesce(Subquery(rows, output_field=models.IntegerField()), 0)
            # A done mailing has nothing pending (finish_if_done).
            known = F(field) if field else Value(0)
            return Case(When(stored, then=known), default=live, output_field=models.IntegerField())

        return self.annotate(
            sent_count=count("done_sent", status=S.SENT),
            failed_count=count("done_failed", status=S.FAILED),
            pending_count=count(None, status__in=[S.PENDING, S.SENDING]),
            digest_count=count("done_digest", status=S.DIGEST),
            skipped_count=count("done_skipped", status=S.SKIPPED),
            ambiguous_count=count("done_ambiguous", ambiguous=True),
        )

    def archived(self):
        """The public archive (/newsletter/): mailings that went out — sending
        or done — newest first by when they went out (their send time: a
        scheduled send goes out after it was written). Not those still
        queued (an editor may cancel them) or paused (withdrawn: the post was
        taken down). Without the email's bodies, which only the web version
        reads."""
        return (
            self.filter(status__in=[Mailing.Status.SENDING, Mailing.Status.DONE])
            .order_by("-send_at", "-id")
            .defer("text", "html")
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
        CANCELLED = "cancelled", "Cancelled"

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
    links = models.JSONField(
        default=list,
        blank=True,
        help_text="The web addresses the email links to, in order: a tracked link names "
        "one by its place here, so it can lead nowhere else.",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    fanout_cursor = models.BigIntegerField(
        default=0, help_text="Readers up to this id have their deliveries recorded."
    )
    fanout_done = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    send_at = models.DateTimeField(
        "send time",
        default=timezone.now,
        help_text="Nobody is mailed before this: until then the mailing can be cancelled.",
    )
    progress_at = models.DateTimeField(
        default=timezone.now, help_text="The last time a worker moved this mailing forward."
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    held_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set while its batches are held: a problem that is not any reader's "
        "(the provider or relay is down, refuses our credentials or our sender).",
    )
    held_reason = models.CharField(max_length=500, blank=True)
    # A done mailing's counts, stored when it finished and moved in the same
    # transaction as every later change of its deliveries' statuses (a
    # digest sent, a reader erased, a withdrawn post): the admin reads these
    # instead of counting a million rows (MailingQuerySet.with_progress).
    # Empty while the mailing is not done. Pending is 0 once done.
    done_sent = models.IntegerField(null=True, blank=True, editable=False)
    done_failed = models.IntegerField(null=True, blank=True, editable=False)
    done_skipped = models.IntegerField(null=True, blank=True, editable=False)
    done_digest = models.IntegerField(null=True, blank=True, editable=False)
    done_ambiguous = models.IntegerField(null=True, blank=True, editable=False)
    web_key = models.UUIDField(
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text="Random: the address of the email's web version (/email/<key>/), "
        "which cannot be guessed from the post's id or slug.",
    )

    objects = MailingQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # delivery.sweep: mailings in flight that made no progress lately.
            models.Index(fields=["status", "progress_at"], name="mailing_inflight_idx"),
            # MailingQuerySet.archived(): the archive page and its feed, newest first.
            models.Index(fields=["status", "-send_at", "-id"], name="mailing_sent_archive_idx"),
        ]

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        """The email's web version, as readers got it (views.web_version)."""
        return reverse("newsletter:web_version", args=[self.web_key])

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
        """Queued → sending (the fan-out begins), once its send time has
        come. Returns whether the mailing is sending: not if it is not due
        yet, or was cancelled or paused meanwhile. One conditional update,
        so a cancel and a start racing each other cannot both win."""
        return bool(
            Mailing.objects.filter(
                pk=self.pk,
                status__in=[self.Status.QUEUED, self.Status.SENDING],
                send_at__lte=timezone.now(),
            ).update(status=self.Status.SENDING)
        )

    def cancel(self):
        """Queued → cancelled: within the undo window, or before a scheduled
        send time, nobody has been mailed and nobody will be. Returns
        whether this call cancelled it (not once the fan-out has begun:
        pause it then)."""
        return bool(
            Mailing.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
                status=self.Status.CANCELLED, finished_at=timezone.now()
            )
        )

    def seconds_to_send(self, now=None):
        """Seconds until the send time while the mailing waits for it (it
        can be cancelled), else None."""
        if self.status != self.Status.QUEUED:
            return None
        return max(0.0, (self.send_at - (now or timezone.now())).total_seconds())

    def add_deliveries(self):
        """Record a Delivery for each of the next BATCH_SIZE matching readers
        after the fan-out cursor (readers are walked in id order: constant
        memory), and move the cursor past them. Returns (first, last,
        any_instant) for those readers, or None once every reader has one
        (fanout_done is then set).

        Three queries whatever BATCH_SIZE, and no reader passes through
        Python: one finds the chunk's bounds, one INSERT ... SELECT copies
        the readers straight from the audience query (Mailing.recipients)
        into the ledger, one moves the cursor, the last two in one
        transaction. Starts from fanout_cursor as this instance read it
        (load the mailing afresh to resume after a crash: the unique
        (mailing, subscriber) constraint makes a chunk recorded twice
        harmless).
        """
        instant = Subscriber.Frequency.INSTANT
        readers = self.recipients().filter(pk__gt=self.fanout_cursor)
        chunk = readers.order_by("pk")[: conf.BATCH_SIZE].aggregate(
            first=Min("pk"), last=Max("pk"), instant=Count("pk", filter=Q(frequency=instant))
        )
        if chunk["first"] is None:
            Mailing.objects.filter(pk=self.pk).update(fanout_done=True, progress_at=timezone.now())
            self.fanout_done = True
            return None
        first, last = chunk["first"], chunk["last"]
        status = Case(
            When(frequency=instant, then=Value(Delivery.Status.PENDING)),
            default=Value(Delivery.Status.DIGEST),
        )
        with transaction.atomic():
            Delivery.objects.insert_from(
                readers.filter(pk__lte=last),
                mailing_id=Value(self.pk),
                subscriber_id=F("pk"),
                status=status,
            )
            Mailing.objects.filter(pk=self.pk).update(
                fanout_cursor=last, progress_at=timezone.now()
            )
        self.fanout_cursor = last
        return first, last, chunk["instant"] > 0

    def deliveries_between(self, first, last):
        """The deliveries of readers with ids first..last: one batch's range."""
        return Delivery.objects.filter(
            mailing=self, subscriber_id__gte=first, subscriber_id__lte=last
        )

    @property
    def held(self):
        """Whether this mailing is sending and its batches are held."""
        return self.status == self.Status.SENDING and self.held_since is not None

    def moved(self, outcome=None):
        """Note that a worker moved this mailing forward (the sweeper
        requeues mailings that made no progress for CLAIM_TIMEOUT), and
        what its batch's `outcome` (transports.Outcome) says of the mailing:
        held (its batch went back to wait, a problem that is not any
        reader's: held_since, held_reason), or sending again (some reader's
        message was accepted). Returns whether this call found the mailing
        newly held."""
        now, mine = timezone.now(), Mailing.objects.filter(pk=self.pk)
        if outcome is not None and outcome.held:
            reason = outcome.held[:500]
            if mine.filter(held_since__isnull=True).update(
                progress_at=now, held_since=now, held_reason=reason
            ):
                return True
            mine.update(progress_at=now, held_reason=reason)
        elif outcome is not None and outcome.sent:
            mine.update(progress_at=now, held_since=None, held_reason="")
        else:
            mine.update(progress_at=now)
        return False

    def has_work_due(self):
        """Whether something can be done for this mailing now: its fan-out
        is unfinished (and its send time has come), or a delivery is
        pending and due."""
        if self.send_at > timezone.now():
            return False
        return not self.fanout_done or (
            self.deliveries.filter(_due(), status=Delivery.Status.PENDING).exists()
        )

    def finish_if_done(self):
        """Mark the mailing done once its fan-out is complete and no delivery
        is pending or being sent, and store its counts (done_sent and
        friends), in one transaction.

        The counts are read in a statement of their own, after the update
        that marks it done has locked its row: a change of its deliveries
        committed before is counted, and one committed after it found the
        mailing done (DeliveryQuerySet.move takes the same lock) moves the
        stored counts itself. Counting is once per mailing, over its rows."""
        unfinished = Delivery.objects.filter(
            mailing=self, status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING]
        )
        with transaction.atomic():
            finished = (
                Mailing.objects.filter(
                    pk=self.pk,
                    fanout_done=True,
                    status__in=[self.Status.QUEUED, self.Status.SENDING],
                )
                .exclude(Exists(unfinished))
                .update(status=self.Status.DONE, finished_at=timezone.now())
            )
            if finished:
                Mailing.objects.filter(pk=self.pk).update(**Mailing.counted(self.pk))
        return bool(finished)

    @staticmethod
    def counted(pk):
        """{done_sent: …, done_failed: …, …}: the mailing's counts, counted
        over its deliveries (two index-only queries)."""
        rows = Delivery.objects.filter(mailing_id=pk).order_by()
        by_status = dict(rows.values_list("status").annotate(n=Count("pk")))
        return {
            **{field: by_status.get(status, 0) for status, field in DONE_COUNTS.items()},
            "done_ambiguous": rows.filter(ambiguous=True).count(),
        }

    def withdraw(self):
        """The post was taken down: stop sending it. The mailing is paused
        (an editor may resume it) and nobody's digest will list it."""
        self.pause()
        # Also those already in a digest not yet sent: a digest lists only
        # deliveries still waiting (and is skipped when none are left).
        Delivery.objects.filter(mailing=self, status=Delivery.Status.DIGEST).move(
            Delivery.Status.SKIPPED
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
        (delivery.retry_failed then queues them); returns how many. A done
        mailing is sending again, in the same transaction: its counts are
        counted again until it is done again (and stored anew then)."""
        with transaction.atomic():
            # Locked first, as DeliveryQuerySet.move does.
            list(Mailing.objects.select_for_update().filter(pk=self.pk).values_list("pk"))
            count = Delivery.objects.filter(
                mailing=self,
                status=Delivery.Status.FAILED,
                subscriber__status=Subscriber.Status.CONFIRMED,
            ).update(
                status=Delivery.Status.PENDING,
                attempts=0,
                # Due now, and marked as come back: its batch asks the send
                # journal about it (delivery._journaled), as for any row that
                # was claimed before.
                next_attempt_at=timezone.now(),
                error="",
                permanent=False,
            )
            if count:
                Mailing.objects.filter(pk=self.pk, status=self.Status.DONE).update(
                    status=self.Status.SENDING,
                    finished_at=None,
                    progress_at=timezone.now(),
                    **dict.fromkeys([*DONE_COUNTS.values(), "done_ambiguous"]),
                )
        return count


# The stored count of a done mailing (Mailing.done_*) for each status.
DONE_COUNTS = {
    "sent": "done_sent",
    "failed": "done_failed",
    "skipped": "done_skipped",
    "digest": "done_digest",
}


class DeliveryQuerySet(SendableQuerySet):
    def lock_mailings(self):
        """Lock the rows' mailings until the end of the transaction, in id
        order (so two transactions taking several never wait for each
        other in a circle); returns [(id, status, done_sent)]. A
        transaction that moves rows in several steps (a digest batch's
        sent, skipped and failed) takes all its locks first, at once, for
        the same reason. Nothing on SQLite, whose IMMEDIATE transactions
        hold the whole database."""
        return list(
            Mailing.objects.select_for_update()
            .filter(pk__in=self.order_by().values("mailing_id"))
            .order_by("pk")
            .values_list("pk", "status", "done_sent")
        )

    def move(self, status, *, locked=None, **fields):
        """update(status=status, **fields) on these rows, keeping the counts
        stored on done mailings exact; returns how many rows it updated.
        Every change of the status of a row whose mailing may be done goes
        through it (a digest's outcome, a reader's erasure, a withdrawn
        post); a batch's claims and outcomes need not: a done mailing has
        no row pending or being sent.

        In one transaction: the rows' mailings are locked first (in id
        order), so a mailing cannot finish (Mailing.finish_if_done, which
        counts under that lock) or another change of its rows land between
        the count of what moves and the move. Then, for the done ones, the
        rows that change status are counted by mailing and old status (over
        the rows that move only), the rows are updated, and the stored
        counts move by as much, in one statement. Rows of mailings not done
        need nothing: their counts are counted. `locked`: what
        lock_mailings() returned, when the caller took the locks already.
        Four queries when a done mailing's rows move, two otherwise."""
        # No savepoint of its own inside a caller's transaction: a failure
        # rolls that back whole.
        with transaction.atomic(using=self.db, savepoint=False):
            done = [
                pk
                for pk, state, stored in (self.lock_mailings() if locked is None else locked)
                if state == Mailing.Status.DONE and stored is not None
            ]
            moved = []
            if done:
                moved = list(
                    self.order_by()
                    .filter(mailing__in=done)
                    .exclude(status=status)
                    .values_list("mailing", "status")
                    .annotate(n=Count("pk"))
                )
            updated = self.update(status=status, **fields)
            changes = {}
            for mailing, old, n in moved:
                for state, sign in ((old, -1), (status, 1)):
                    field = DONE_COUNTS.get(state)
                    if field:  # (a done mailing has no row pending or being sent)
                        changes.setdefault(field, []).append(When(pk=mailing, then=sign * n))
            if changes:
                Mailing.objects.filter(pk__in={m for m, _, _ in moved}).update(
                    **{
                        field: F(field)
                        + Case(*whens, default=0, output_field=models.IntegerField())
                        for field, whens in changes.items()
                    }
                )
        return updated


class Delivery(Sendable):
    """One post for one reader: the ledger that makes sending exactly-once."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped: left before it was sent"
        DIGEST = "digest", "Waiting for the reader's digest"

    # No index of its own: unique_delivery and delivery_batch_idx start with it
    # (one index fewer to update for each of a million rows a fan-out writes).
    mailing = models.ForeignKey(
        Mailing, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    # SET_NULL: erasing a reader keeps the mailing's counts, not the address.
    subscriber = models.ForeignKey(
        Subscriber, null=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    digest = models.ForeignKey(
        "Digest",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deliveries",
        db_index=False,  # delivery_in_digest_idx, partial
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["mailing", "subscriber"], name="unique_delivery"),
        ]
        indexes = [
            # delivery.send_mailing_batch: a mailing's pending deliveries in a reader-id range.
            models.Index(fields=["mailing", "status", "subscriber"], name="delivery_batch_idx"),
            # DigestQuerySet.create_due: deliveries waiting for a digest (partial,
            # as above: a fan-out's instant readers are not in it).
            models.Index(
                fields=["digest", "created_at"],
                condition=Q(status="digest"),
                name="delivery_waiting_idx",
            ),
            # MailingQuerySet.with_progress: the ambiguous count (rare rows).
            models.Index(
                fields=["mailing"], condition=Q(ambiguous=True), name="delivery_ambiguous_idx"
            ),
            # The rows a batch claimed (SendableQuerySet.claim, record), and the
            # sweeper's claims in flight with their age (delivery._dead_claims,
            # from this index alone). Partial: only rows being sent are in it,
            # so a fan-out's inserts and a batch's outcomes leave it alone.
            # One index for both: each claim writes one index entry fewer a row.
            models.Index(
                fields=["claim", "claimed_at"],
                condition=Q(status="sending"),
                name="delivery_in_flight_idx",
            ),
            # DigestQuerySet.posts_of and friends: a digest's deliveries. Partial:
            # an instant reader's delivery never has one.
            models.Index(
                fields=["digest"], condition=Q(digest__isnull=False), name="delivery_in_digest_idx"
            ),
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
        changes = [
            (items, status, fields, [pk for digest in items for pk in listed.get(digest.pk, [])])
            for items, status, fields in (
                (outcome.sent, S.SENT, {"sent_at": timezone.now()}),
                (outcome.skipped, S.SKIPPED, {}),
                (outcome.failed, S.FAILED, {}),
            )
        ]
        every = [pk for *_, shown in changes for pk in shown]
        # All at once, before the moves (lock_mailings).
        locked = Delivery.objects.filter(pk__in=every).lock_mailings() if every else []
        done = []
        for items, status, fields, shown in changes:
            if shown:
                Delivery.objects.filter(pk__in=shown).move(status, locked=locked, **fields)
            done += items
        if done:
            Delivery.objects.filter(digest__in=done, status=S.DIGEST).update(digest=None)

    def release(self, ids, sent, due_at=None):
        """As SendableQuerySet.release; a digest the journal says was sent
        takes its waiting deliveries with it (they were in it)."""
        released = super().release(ids, sent, due_at)
        if sent:
            Delivery.objects.filter(digest__in=list(sent), status=Delivery.Status.DIGEST).move(
                Delivery.Status.SENT, sent_at=timezone.now()
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


# Corrections: a note about a post that has gone out, sent to exactly the
# readers it reached, through the same ledger (one CorrectionDelivery per
# reader, claimed like any other row).

MAX_CORRECTION_LENGTH = 1000


class CorrectionQuerySet(models.QuerySet):
    def sending(self):
        return self.filter(status=Correction.Status.SENDING)

    def for_post_key(self, post_key):
        """The corrections of one post, oldest first: what the post's page
        and a digest that lists it show."""
        return self.filter(mailing__post_key=post_key).order_by("created_at", "pk")

    def notes_for(self, mailing_ids):
        """{mailing id: [Correction, …]} in one query, oldest first."""
        notes = {}
        for correction in self.filter(mailing__in=list(mailing_ids)).order_by("created_at", "pk"):
            notes.setdefault(correction.mailing_id, []).append(correction)
        return notes

    def add_missed(self, listed, shown):
        """Corrections made while a digest batch was out: it read its posts'
        notes (`shown`, their ids), then sent, and a correction made in
        between is in neither those digests nor its own fan-out (which takes
        the readers whose copy was sent before it was made). Each reader of
        `listed` ((reader id, mailing id) pairs, what the sent digests
        listed) gets a CorrectionDelivery for each such correction of the
        post, which goes back to sending if it was done. Returns [(correction
        id, first reader id, last reader id)]: the batches to queue. One
        query when there is none."""
        readers_of = {}
        for reader, mailing in listed:
            readers_of.setdefault(mailing, set()).add(reader)
        if not readers_of:
            return []
        late = self.filter(mailing__in=list(readers_of)).exclude(pk__in=list(shown))
        batches = []
        for correction, mailing in late.values_list("pk", "mailing_id"):
            readers = sorted(readers_of[mailing])
            CorrectionDelivery.objects.bulk_create(
                [CorrectionDelivery(correction_id=correction, subscriber_id=r) for r in readers],
                ignore_conflicts=True,
            )
            batches.append((correction, readers[0], readers[-1]))
        if batches:
            self.filter(
                pk__in=[correction for correction, _, _ in batches], status=Correction.Status.DONE
            ).update(status=Correction.Status.SENDING, finished_at=None, progress_at=timezone.now())
        return batches


class Correction(models.Model):
    """A short note correcting a post, emailed once to every reader the
    post's email reached who is still subscribed, and shown with the post."""

    class Status(models.TextChoices):
        SENDING = "sending", "Sending"
        DONE = "done", "Done"

    mailing = models.ForeignKey(Mailing, on_delete=models.CASCADE, related_name="corrections")
    text = models.TextField(
        max_length=MAX_CORRECTION_LENGTH,
        help_text="What was wrong and what is right, in a sentence or two.",
    )
    text_hash = models.CharField(max_length=64, editable=False)
    created_by = models.CharField(max_length=150, blank=True)
    # The email, rendered once; the reader's links are placeholders.
    subject = models.CharField(max_length=300)
    email_text = models.TextField()
    email_html = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENDING)
    fanout_cursor = models.BigIntegerField(default=0)
    fanout_done = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    progress_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = CorrectionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The same note twice (a double click, a resubmitted form) is one correction.
            models.UniqueConstraint(fields=["mailing", "text_hash"], name="unique_correction"),
        ]
        indexes = [
            # delivery.sweep: corrections in flight that made no progress lately.
            models.Index(fields=["status", "progress_at"], name="correction_inflight_idx"),
        ]

    def __str__(self):
        return f"Correction to {self.mailing}"

    def recipients(self):
        """Readers the post's email reached (sent, by itself or in a digest,
        before the correction was made) who are still confirmed: not those
        who subscribed later, left, were erased or suppressed, nor those
        whose digest had not gone yet (it lists the post with its notes)."""
        return Delivery.objects.filter(
            mailing_id=self.mailing_id,
            status=Delivery.Status.SENT,
            sent_at__lte=self.created_at,
            subscriber__status=Subscriber.Status.CONFIRMED,
        )

    def add_deliveries(self):
        """As Mailing.add_deliveries: the next BATCH_SIZE recipients after
        the cursor get a CorrectionDelivery; returns (first, last), or None
        once everyone has one."""
        ids = list(
            self.recipients()
            .filter(subscriber_id__gt=self.fanout_cursor)
            .order_by("subscriber_id")
            .values_list("subscriber_id", flat=True)[: conf.BATCH_SIZE]
        )
        now = timezone.now()
        if not ids:
            Correction.objects.filter(pk=self.pk).update(fanout_done=True, progress_at=now)
            self.fanout_done = True
            return None
        CorrectionDelivery.objects.bulk_create(
            [CorrectionDelivery(correction=self, subscriber_id=pk) for pk in ids],
            ignore_conflicts=True,
        )
        Correction.objects.filter(pk=self.pk).update(fanout_cursor=ids[-1], progress_at=now)
        self.fanout_cursor = ids[-1]
        return ids[0], ids[-1]

    def deliveries_between(self, first, last):
        return CorrectionDelivery.objects.filter(
            correction=self, subscriber_id__gte=first, subscriber_id__lte=last
        )

    def moved(self):
        Correction.objects.filter(pk=self.pk).update(progress_at=timezone.now())

    def has_work_due(self):
        return not self.fanout_done or (
            self.deliveries.filter(_due(), status=CorrectionDelivery.Status.PENDING).exists()
        )

    def finish_if_done(self):
        unfinished = CorrectionDelivery.objects.filter(
            correction=self,
            status__in=[CorrectionDelivery.Status.PENDING, CorrectionDelivery.Status.SENDING],
        )
        return bool(
            Correction.objects.filter(pk=self.pk, fanout_done=True, status=self.Status.SENDING)
            .exclude(Exists(unfinished))
            .update(status=self.Status.DONE, finished_at=timezone.now())
        )


class CorrectionDelivery(Sendable):
    """One correction for one reader: exactly once, like a Delivery."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped: left before it was sent"

    correction = models.ForeignKey(Correction, on_delete=models.CASCADE, related_name="deliveries")
    subscriber = models.ForeignKey(
        Subscriber, null=True, on_delete=models.SET_NULL, related_name="correction_deliveries"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)

    objects = SendableQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "correction deliveries"
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["correction", "subscriber"], name="unique_correction_delivery"
            ),
        ]
        indexes = [
            # delivery.send_correction_batch: pending rows in a reader-id range.
            models.Index(
                fields=["correction", "status", "subscriber"], name="correction_batch_idx"
            ),
            # The sweeper: claims in flight and their age (delivery._dead_claims).
            models.Index(fields=["status", "claimed_at"], name="correction_stale_idx"),
            # Sendable.claim.
            models.Index(fields=["claim"], name="correction_claim_idx"),
        ]

    def __str__(self):
        return f"{self.correction} → {self.subscriber or 'erased reader'}"


# Engagement stats (stats.py classifies; these store). Counters always; an
# event row with its reader only in per-reader mode.


class StatKind(models.TextChoices):
    OPEN = "open", "Opened (a person)"
    OPEN_MACHINE = "open-machine", "Opened by a machine"
    OPEN_MPP = "open-mpp", "Fetched by Apple Mail Privacy Protection"
    CLICK = "click", "Clicked (a person)"
    CLICK_MACHINE = "click-machine", "Clicked by a machine"


def _hour(at):
    return at.replace(minute=0, second=0, microsecond=0)


class StatCountQuerySet(models.QuerySet):
    def add(self, mailing_id, kind, link=-1, at=None, n=1):
        """Count `n` more of `kind` in the hour of `at` (now): one update, or
        one insert for the hour's first."""
        key = {
            "mailing_id": mailing_id,
            "kind": kind,
            "link": link,
            "hour": _hour(at or timezone.now()),
        }
        if self.filter(**key).update(count=F("count") + n):
            return
        try:
            with transaction.atomic():
                self.create(count=n, **key)
        except IntegrityError:  # Another request made the row a moment ago.
            self.filter(**key).update(count=F("count") + n)

    def move(self, mailing_id, link, at, old, new):
        """One count of `old` in that hour was a `new` after all."""
        key = {"mailing_id": mailing_id, "link": link, "hour": _hour(at)}
        if self.filter(kind=old, count__gt=0, **key).update(count=F("count") - 1):
            self.add(mailing_id, new, link, at)

    def totals(self, mailings):
        """{mailing id: {kind: count}} in one query."""
        out = {}
        rows = (
            self.filter(mailing__in=mailings)
            .values_list("mailing", "kind")
            .annotate(n=Sum("count"))
        )
        for mailing, kind, n in rows:
            out.setdefault(mailing, {})[kind] = n
        return out


class StatCount(models.Model):
    """How many opens or clicks of one kind a mailing (or one of its links)
    had in one hour. Holds no reader: this is all aggregate mode stores."""

    mailing = models.ForeignKey(Mailing, on_delete=models.CASCADE, related_name="stat_counts")
    kind = models.CharField(max_length=20, choices=StatKind.choices)
    link = models.IntegerField(default=-1, help_text="Place in the mailing's links; -1: opens.")
    hour = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    objects = StatCountQuerySet.as_manager()

    class Meta:
        constraints = [
            # StatCountQuerySet.add finds its row by these (and the stats page reads by mailing).
            models.UniqueConstraint(
                fields=["mailing", "kind", "link", "hour"], name="unique_stat_count"
            ),
        ]

    def __str__(self):
        return f"{self.mailing_id} {self.kind} {self.link} {self.hour:%Y-%m-%d %H}h: {self.count}"


class StatEvent(models.Model):
    """One open or click by one reader: per-reader mode only, never for a
    reader who opted out. Erasing the reader deletes their events."""

    mailing = models.ForeignKey(Mailing, on_delete=models.CASCADE, related_name="stat_events")
    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="stat_events")
    kind = models.CharField(max_length=20, choices=StatKind.choices)
    link = models.IntegerField(default=-1)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pk"]
        indexes = [
            # The stats page: a mailing's distinct readers per kind.
            models.Index(fields=["mailing", "kind", "subscriber"], name="stat_event_mailing_idx"),
        ]

    def __str__(self):
        return f"{self.subscriber_id} {self.kind} {self.link} {self.at:%Y-%m-%d %H:%M}"


class Engagement(Mailing):
    """Mailings as the stats pages show them (admin: "Engagement")."""

    class Meta:
        proxy = True
        verbose_name = "mailing engagement"
        verbose_name_plural = "engagement"
