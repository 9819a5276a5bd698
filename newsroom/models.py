import html
import logging
import re
import time
from datetime import timedelta
from functools import partial

import nh3
from ckeditor_uploader.fields import RichTextUploadingField
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Count, Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags
from django.utils.text import Truncator, slugify

import subscriptions

logger = logging.getLogger(__name__)

# What survives in an article body. Everything else (scripts, styles, event
# handlers, iframes, forms, javascript: URLs) is removed on save.
ALLOWED_TAGS = {
    "p", "br", "hr", "h2", "h3", "h4", "strong", "b", "em", "i", "s", "u", "sub", "sup",
    "a", "ul", "ol", "li", "blockquote", "q", "cite", "code", "pre",
    "figure", "figcaption", "img", "table", "thead", "tbody", "tfoot", "tr", "th", "td",
    "caption",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height", "title"},
    "th": {"colspan", "rowspan", "scope"},
    "td": {"colspan", "rowspan"},
    "ol": {"start"},
}


def sanitize_html(value):
    return nh3.clean(
        value or "",
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    )


CONTENT_VERSION_KEY = "newsroom:content-version"


def content_version():
    """A number that changes whenever anything readers see changes."""
    version = cache.get(CONTENT_VERSION_KEY)
    if version is None:
        version = time.time_ns()
        cache.add(CONTENT_VERSION_KEY, version, None)
    return version


def content_changed():
    """Make every cached public page stale: now, and again after commit, so
    a page rendered from the old data while the transaction was open is not
    cached under the new version."""

    def bump():
        try:
            cache.set(CONTENT_VERSION_KEY, time.time_ns(), None)
        except Exception:  # noqa: BLE001 - a cache that is down serves no stale page
            logger.warning("Could not mark the page cache stale", exc_info=True)

    bump()
    transaction.on_commit(bump)


def absolute_url(path):
    """An absolute URL on this site, for emails, feeds and structured data."""
    return settings.SITE_URL + path


def unique_slug(model, value, max_length=200, exclude_pk=None):
    """slugify(value), with -2, -3… appended until no other row has it."""
    base = slugify(value)[: max_length - 4].strip("-") or "item"
    taken = set(
        model.objects.filter(slug__startswith=base)
        .exclude(pk=exclude_pk)
        .values_list("slug", flat=True)
    )
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug


def topic_key(entity_pk):
    return f"entity:{entity_pk}"


def entity_pk_of(key):
    """The entity id in a topic key ("entity:12" → 12), or None."""
    prefix, _, pk = str(key).partition(":")
    return int(pk) if prefix == "entity" and pk.isdigit() else None


class Entity(models.Model):
    """A person, organisation, place or topic that articles are about."""

    class Kind(models.TextChoices):
        PERSON = "person", "Person"
        ORGANIZATION = "organization", "Organisation"
        PLACE = "place", "Place"
        TOPIC = "topic", "Topic"

    # URL prefix of each kind's index and entity pages: /people/jeff-sessions/.
    KIND_PATHS = {
        Kind.PERSON: "people",
        Kind.ORGANIZATION: "organizations",
        Kind.PLACE: "places",
        Kind.TOPIC: "topics",
    }
    KIND_PLURALS = {
        Kind.PERSON: "People",
        Kind.ORGANIZATION: "Organisations",
        Kind.PLACE: "Places",
        Kind.TOPIC: "Topics",
    }
    SCHEMA_TYPES = {
        Kind.PERSON: "Person",
        Kind.ORGANIZATION: "Organization",
        Kind.PLACE: "Place",
        Kind.TOPIC: "Thing",
    }

    name = models.CharField(
        max_length=200, help_text="The name readers know, e.g. “Jeff Sessions”."
    )
    slug = models.SlugField(
        max_length=200,
        unique=True,
        blank=True,
        help_text="The last part of the entity's web address; filled in from the name. "
        "Changing it later keeps the old address working (it redirects).",
    )
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.PERSON)
    aliases = models.TextField(
        blank=True,
        help_text="Other names the articles use, one per line, e.g. “Sessions” or “DOJ”.",
    )
    description = models.TextField(
        blank=True, help_text="One or two sentences shown at the top of the entity's page."
    )
    same_as = models.URLField(
        "same as",
        blank=True,
        help_text="The entity's Wikipedia or Wikidata page, so search engines know who this is.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "entities"
        indexes = [
            # The entity index pages list one kind by name.
            models.Index(fields=["kind", "name"]),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("entity", args=[self.KIND_PATHS[self.kind], self.slug])

    @property
    def topic_key(self):
        """What readers follow by email (subscriptions' topic key): from the
        primary key, so renaming the entity, changing its slug or its kind
        keeps its followers. Never a slug (it has a colon)."""
        return topic_key(self.pk)

    def get_feed_url(self):
        return reverse("entity_feed", args=[self.KIND_PATHS[self.kind], self.slug])

    @property
    def alias_list(self):
        return [a.strip() for a in self.aliases.splitlines() if a.strip()]

    @property
    def kind_path(self):
        return self.KIND_PATHS[self.kind]

    @property
    def schema_type(self):
        return self.SCHEMA_TYPES[self.kind]

    def schema(self):
        """This entity as schema.org data, for an article's about/mentions."""
        data = {
            "@type": self.schema_type,
            "name": self.name,
            "url": absolute_url(self.get_absolute_url()),
        }
        if self.same_as:
            data["sameAs"] = self.same_as
        return data

    def save(self, *args, **kwargs):
        old = None
        if self.pk:
            old = Entity.objects.filter(pk=self.pk).values("name", "slug").first()
        if old and not self.slug:
            self.slug = old["slug"]
        if old and old["name"] != self.name and self.slug == slugify(old["name"])[:196]:
            # Renamed and the address was never set by hand: follow the name.
            self.slug = ""
        if not self.slug:
            self.slug = unique_slug(Entity, self.name, exclude_pk=self.pk)
        with transaction.atomic():
            super().save(*args, **kwargs)
            EntityRedirect.objects.filter(old_slug=self.slug).delete()
            if old and old["slug"] != self.slug:
                EntityRedirect.objects.update_or_create(
                    old_slug=old["slug"], defaults={"entity": self}
                )


class EntityRedirect(models.Model):
    """An old slug of a renamed entity; its pages redirect to the new one."""

    old_slug = models.SlugField(max_length=200, unique=True)
    entity = models.ForeignKey(Entity, on_delete=models.CASCADE, related_name="redirects")

    def __str__(self):
        return f"{self.old_slug} → {self.entity.slug}"


class ArticleQuerySet(models.QuerySet):
    def live(self):
        """Published and due, email-only articles included: what may be
        announced (emailed). Never for a public page: see published()."""
        return self.filter(status=Article.Status.PUBLISHED, published_at__lte=timezone.now())

    def published(self):
        """What readers may see: the one rule every public page, feed, sitemap
        and search goes through. Email-only articles are live but never
        listed; their one address is their email's web version."""
        return self.live().filter(email_only=False)

    def due(self):
        """Scheduled articles whose publish time has come."""
        return self.filter(status=Article.Status.SCHEDULED, published_at__lte=timezone.now())

    def with_entities(self):
        return self.prefetch_related(
            models.Prefetch("tags", queryset=ArticleEntity.objects.select_related("entity"))
        )

    def search(self, query):
        """Articles matching `query`, best first: PostgreSQL full-text search
        there, every word as a substring of title, summary or body elsewhere."""
        from django.db import connection

        query = query.strip()
        if not query:
            return self.none()
        if connection.vendor == "postgresql":
            from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

            vector = (
                SearchVector("title", weight="A")
                + SearchVector("summary", weight="B")
                + SearchVector("body", weight="C")
            )
            search_query = SearchQuery(query, search_type="websearch")
            return (
                self.annotate(rank=SearchRank(vector, search_query))
                .filter(rank__gt=0)
                .order_by("-rank", "-published_at")
            )
        qs = self
        for word in query.split()[:10]:
            qs = qs.filter(
                Q(title__icontains=word) | Q(summary__icontains=word) | Q(body__icontains=word)
            )
        return qs.order_by("-published_at")


class Article(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        PUBLISHED = "published", "Published"

    title = models.CharField(max_length=300)
    slug = models.SlugField(
        max_length=200,
        unique=True,
        blank=True,
        help_text="The last part of the article's web address; filled in from the title.",
    )
    summary = models.TextField(
        "summary",
        blank=True,
        help_text="The dek: one or two sentences under the headline, on the home page, "
        "in feeds, in search results and in the email.",
    )
    body = RichTextUploadingField(
        help_text="Scripts, styles and embedded frames are removed when you save."
    )
    byline = models.CharField(
        max_length=200, blank=True, help_text="Who wrote it, as readers see it, e.g. “By Jane Doe”."
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="articles",
        help_text="The staff account responsible for this article.",
    )
    lead_image = models.ImageField(upload_to="leads/%Y/%m/", blank=True)
    lead_image_alt = models.CharField(
        "lead image description",
        max_length=300,
        blank=True,
        help_text="What the lead image shows, for readers who cannot see it. Required with an image.",
    )
    lead_image_caption = models.CharField(
        "lead image caption",
        max_length=300,
        blank=True,
        help_text="Shown under the image, e.g. what it shows and who took it.",
    )
    status = models.CharField(
        max_length=20,
        choices=Status.choices,
        default=Status.DRAFT,
        help_text="Draft: only staff can preview it. Scheduled: goes live by itself at the "
        "publish time. Published: public now (a future publish time makes it scheduled).",
    )
    published_at = models.DateTimeField(
        "publish time",
        null=True,
        blank=True,
        help_text="When it goes live. Leave empty to publish now.",
    )
    email_subscribers = models.BooleanField(
        "email this post",
        default=True,
        help_text="Email it to subscribers when it goes live. Untick for corrections and "
        "minor updates. An article is never emailed twice.",
    )
    email_only = models.BooleanField(
        "email only",
        default=False,
        help_text="Send it by email and list it in the newsletter archive, but keep it off "
        "the site: not on the home page, entity pages, feeds, search or the sitemap. Its web "
        "version gets a private address; its article address shows nothing.",
    )
    entities = models.ManyToManyField(Entity, through="ArticleEntity", related_name="articles")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ArticleQuerySet.as_manager()

    class Meta:
        ordering = ["-published_at", "-id"]
        get_latest_by = "published_at"
        permissions = [("publish_article", "Can publish and unpublish articles")]
        indexes = [
            # ArticleQuerySet.published(): the home page, feeds and sitemap.
            models.Index(fields=["status", "-published_at"]),
        ]

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("article", args=[self.slug])

    def get_preview_url(self):
        return reverse("article_preview", args=[self.pk])

    @property
    def is_public(self):
        return (
            self.status == self.Status.PUBLISHED
            and self.published_at is not None
            and self.published_at <= timezone.now()
        )

    def clean(self):
        if self.lead_image and not self.lead_image_alt.strip():
            raise ValidationError(
                {"lead_image_alt": "Describe the lead image for readers who cannot see it."}
            )
        if self.email_only and not self.email_subscribers:
            raise ValidationError(
                {
                    "email_only": "An email-only article reaches readers only by email: "
                    "tick “Email this post” too."
                }
            )
        if self.status == self.Status.SCHEDULED and not self.published_at:
            raise ValidationError({"published_at": "Choose when the scheduled article goes live."})

    def save(self, *args, **kwargs):
        self.body = sanitize_html(self.body)
        if not self.slug:
            self.slug = unique_slug(Article, self.title, exclude_pk=self.pk)
        now = timezone.now()
        if self.status == self.Status.PUBLISHED:
            if self.published_at is None:
                self.published_at = now
            if self.published_at > now:
                self.status = self.Status.SCHEDULED
        was = (
            Article.objects.filter(pk=self.pk).values_list("status", flat=True).first()
            if self.pk
            else None
        )
        super().save(*args, **kwargs)
        if self.status == self.Status.PUBLISHED and was != self.Status.PUBLISHED:
            self.announce()
        elif was == self.Status.PUBLISHED and self.status != self.Status.PUBLISHED:
            subscriptions.withdraw(self)

    def publish(self):
        """Make the article public now, keeping an earlier publish time.

        Returns True when this call is the one that took it live: two beat
        ticks or two editors clicking at once cannot both get True.
        """
        now = timezone.now()
        if self.published_at is None or self.published_at > now:
            self.published_at = now
        went_live = (
            Article.objects.filter(pk=self.pk)
            .exclude(status=self.Status.PUBLISHED)
            .update(status=self.Status.PUBLISHED, published_at=self.published_at, updated_at=now)
        ) == 1
        self.status = self.Status.PUBLISHED
        if went_live:
            content_changed()
            self.announce()
        return went_live

    def announce(self):
        """Email the article to subscribers once it is committed as live.

        After commit, so the tags saved in the same transaction (the admin's
        inline, load_seeds) are the topics announced, and a rolled-back
        publication mails nobody. subscriptions.announce() is idempotent:
        republishing or a second call never makes a second mailing.
        """
        if self.email_subscribers:
            transaction.on_commit(partial(announce_article, self.pk))

    def unpublish(self):
        """Back to draft: gone from every public page at once."""
        Article.objects.filter(pk=self.pk).update(
            status=self.Status.DRAFT, updated_at=timezone.now()
        )
        self.status = self.Status.DRAFT
        content_changed()
        subscriptions.withdraw(self)

    # An article whose announce was lost is announced late only within this
    # long of its publication, so articles from before the newsletter, or
    # backdated ones, are never mailed in bulk.
    MISSED_ANNOUNCE_WINDOW = timedelta(days=2)

    @classmethod
    def announce_missed(cls, now=None):
        """Announce the live articles with "Email this post" ticked that have
        no mailing: the announce after their commit was lost (the process
        died in between). Published at least a minute ago, so the usual
        after-commit announce is not raced; within MISSED_ANNOUNCE_WINDOW.
        Returns the ids announced."""
        now = now or timezone.now()
        recent = cls.objects.live().filter(
            email_subscribers=True,
            published_at__gte=now - cls.MISSED_ANNOUNCE_WINDOW,
            published_at__lte=now - timedelta(minutes=1),
        )
        missed = subscriptions.unannounced(recent)
        for article in missed:
            # Its readers are those confirmed when it went live.
            announce_article(article.pk, live_since=article.published_at)
        return [article.pk for article in missed]

    @classmethod
    def publish_due(cls):
        """Publish every scheduled article whose time has come; returns them."""
        published = []
        for article in cls.objects.due():
            if article.publish():
                published.append(article)
        return published

    def tags_by_role(self):
        """(about, mentions) entity lists, from the prefetched tags."""
        about, mentions = [], []
        for tag in self.tags.all():
            (about if tag.role == ArticleEntity.Role.ABOUT else mentions).append(tag.entity)
        return about, mentions

    def tagged_entities(self):
        about, mentions = self.tags_by_role()
        return about + mentions

    def topic_keys(self):
        """Topic keys of the entities it is tagged with: what entity
        followers follow (Entity.topic_key)."""
        return [entity.topic_key for entity in self.tagged_entities()]

    # What subscriptions.announce() reads of a post (see README, Subscriptions).

    def email_summary(self):
        return self.plain_summary(words=60)

    def email_html(self):
        return self.body

    def topic_links(self):
        return [(e.name, absolute_url(e.get_absolute_url())) for e in self.tagged_entities()]

    def plain_summary(self, words=40):
        """The summary, or the opening of the body when there is none."""
        if self.summary.strip():
            return self.summary.strip()
        text = html.unescape(strip_tags(re.sub(r"</(p|h\d|li|blockquote)>", " ", self.body)))
        return Truncator(" ".join(text.split())).words(words)

    def reading_minutes(self):
        """Minutes to read the body at 230 words a minute; at least one."""
        words = len(strip_tags(self.body).split())
        return max(1, round(words / 230))

    def email_image(self):
        """(absolute URL, alt text) of the lead image for the email, or None."""
        if not self.lead_image:
            return None
        return absolute_url(self.lead_image.url), self.lead_image_alt

    def related(self, limit=4):
        """Published articles sharing the most entities with this one."""
        entity_ids = [entity.pk for entity in self.tagged_entities()]
        if not entity_ids:
            return Article.objects.none()
        return (
            Article.objects.published()
            .filter(tags__entity__in=entity_ids)
            .exclude(pk=self.pk)
            .annotate(shared=Count("tags"))
            .order_by("-shared", "-published_at")[:limit]
        )

    def schema(self):
        """schema.org NewsArticle data; embedded as JSON-LD on the article page."""
        about, mentions = self.tags_by_role()
        url = absolute_url(self.get_absolute_url())
        data = {
            "@context": "https://schema.org",
            "@type": "NewsArticle",
            "headline": self.title,
            "url": url,
            "mainEntityOfPage": url,
            "description": self.plain_summary(),
            "publisher": {
                "@type": "Organization",
                "name": settings.SITE_NAME,
                "url": settings.SITE_URL,
            },
            "dateModified": self.updated_at.isoformat() if self.updated_at else None,
        }
        if self.published_at:
            data["datePublished"] = self.published_at.isoformat()
        if self.byline:
            data["author"] = {"@type": "Person", "name": self.byline.removeprefix("By ").strip()}
        if self.lead_image:
            data["image"] = absolute_url(self.lead_image.url)
        if about:
            data["about"] = [entity.schema() for entity in about]
        if mentions:
            data["mentions"] = [entity.schema() for entity in mentions]
        return data


class ArticleEntity(models.Model):
    """An entity tagged on an article, and whether the article is about it."""

    class Role(models.TextChoices):
        ABOUT = "about", "About"
        MENTIONS = "mentions", "Mentions"

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="tags")
    entity = models.ForeignKey(Entity, on_delete=models.CASCADE, related_name="tags")
    role = models.CharField(
        max_length=10,
        choices=Role.choices,
        default=Role.ABOUT,
        help_text="About: the article is about them. Mentions: they only come up in it.",
    )

    class Meta:
        ordering = ["role", "entity__name"]
        verbose_name = "tagged entity"
        verbose_name_plural = "tagged entities"
        constraints = [
            models.UniqueConstraint(fields=["article", "entity"], name="unique_article_entity"),
        ]

    def __str__(self):
        return f"{self.article} — {self.role} {self.entity}"


def announce_article(pk, live_since=None):
    """Hand a live article to the newsletter; see Article.announce()."""
    article = Article.objects.live().with_entities().filter(pk=pk).first()
    if article and article.email_subscribers:
        subscriptions.announce(article, live_since=live_since)


def subscription_topics():
    """What readers can follow by email (settings.SUBSCRIPTIONS_TOPICS): every
    entity, as (key, label, slug): the key (Entity.topic_key) is what posts
    announce and follows keep; the slug of the moment is what CSV files
    name (import_subscribers, export_subscribers)."""
    return [
        (topic_key(pk), name, slug)
        for pk, name, slug in Entity.objects.order_by("kind", "name").values_list(
            "pk", "name", "slug"
        )
    ]


def search_subscription_topics(query="", keys=None, limit=20):
    """settings.SUBSCRIPTIONS_TOPIC_SEARCH: the (key, label) pairs of the
    entities with these keys, or of at most `limit` whose name or alias
    contains `query` (names starting with it first), or, without a query,
    the entities in the most articles; so the subscribe and preferences
    pages never need the whole list."""
    entities = Entity.objects.order_by("name")

    def pairs(queryset):
        return [(topic_key(pk), name) for pk, name in queryset.values_list("pk", "name")]

    if keys is not None:
        ids = [pk for pk in (entity_pk_of(key) for key in keys) if pk is not None]
        return pairs(entities.filter(pk__in=ids))
    query = " ".join(query.split())[:100]
    if not query:
        return pairs(entities.annotate(n=Count("tags")).order_by("-n", "name")[:limit])
    starting = pairs(entities.filter(name__istartswith=query)[:limit])
    if len(starting) < limit:
        seen = [entity_pk_of(key) for key, _ in starting]
        more = entities.filter(Q(name__icontains=query) | Q(aliases__icontains=query))
        starting += pairs(more.exclude(pk__in=seen)[: limit - len(starting)])
    return starting


@receiver([post_save, post_delete], sender=Article)
@receiver([post_save, post_delete], sender=Entity)
@receiver([post_save, post_delete], sender=ArticleEntity)
@receiver([post_save, post_delete], sender=EntityRedirect)
def _content_changed(**kwargs):
    # Cache invalidation is cross-cutting: every save and delete, the
    # admin's bulk deletes included, makes the cached public pages stale.
    content_changed()
