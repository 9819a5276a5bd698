"""Small factory helpers for tests: each makes one row with sensible defaults
and takes only what a test cares about."""

import importlib
import itertools
from datetime import timedelta

from django.contrib.auth.models import Group, Permission, User
from django.utils import timezone
from django.utils.html import escape

from newsroom.models import Article, ArticleEntity, Entity
from subscriptions.models import Subscriber

_counter = itertools.count(1)


def make_entity(name=None, kind=Entity.Kind.PERSON, **fields):
    name = name or f"Person {next(_counter)}"
    return Entity.objects.create(name=name, kind=kind, **fields)


def make_article(title=None, status=Article.Status.PUBLISHED, entities=(), **fields):
    """An article; published an hour ago unless told otherwise.

    `entities` are Entity objects (tagged "about") or (entity, role) pairs.
    """
    title = title or f"Article {next(_counter)}"
    if status == Article.Status.PUBLISHED:
        fields.setdefault("published_at", timezone.now() - timedelta(hours=1))
    fields.setdefault("body", f"<p>The body of {escape(title)}.</p>")
    article = Article.objects.create(title=title, status=status, **fields)
    for item in entities:
        entity, role = item if isinstance(item, tuple) else (item, ArticleEntity.Role.ABOUT)
        ArticleEntity.objects.create(article=article, entity=entity, role=role)
    return article


def make_staff(username="editor", role="Editors", password="correct-horse-battery"):
    """A staff user in the given role group ("Editors" or "Authors")."""
    user = User.objects.create_user(username, f"{username}@example.com", password, is_staff=True)
    user.groups.add(_role(role))
    return user


def _role(name):
    """The role group made by the roles migration; made again the same way
    when a transactional test has flushed the database."""
    group, created = Group.objects.get_or_create(name=name)
    if created:
        roles = importlib.import_module("newsroom.migrations.0002_roles")
        codenames = roles.EDITOR_PERMISSIONS if name == "Editors" else roles.AUTHOR_PERMISSIONS
        group.permissions.set(
            Permission.objects.filter(content_type__app_label="newsroom", codename__in=codenames)
        )
        if name == "Editors":
            newsletter = importlib.import_module("newsroom.migrations.0006_editor_email_send_at")
            group.permissions.add(
                *Permission.objects.filter(
                    content_type__app_label="subscriptions",
                    codename__in=newsletter.EDITOR_NEWSLETTER_PERMISSIONS,
                )
            )
    return group


def make_subscriber(email=None, *, status=Subscriber.Status.CONFIRMED, topics=(), **fields):
    """A stored Subscriber (confirmed unless told), following `topics` or,
    without them, everything."""
    subscriber = Subscriber.objects.create(
        email=email or f"reader{next(_counter)}@example.com",
        status=status,
        follows_everything=not topics,
        **fields,
    )
    if topics:
        subscriber.set_follows(topics)
    return subscriber


def signed_key(text, name, purpose):
    """The subscriber key signed by the one /subscribe/<name>/<token>/ link
    in `text`. Links carry the second they were signed in, so a test
    compares what they sign, not the characters (a message built in a
    worker and a link made by the test may fall in different seconds)."""
    import re

    from subscriptions import tokens

    found = set(re.findall(rf"/subscribe/{name}/([^/\s\"<>]+)/", text))
    assert len(found) == 1, found
    return tokens.load(found.pop(), purpose)
