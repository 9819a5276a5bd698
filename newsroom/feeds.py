from django.conf import settings
from django.contrib.syndication.views import Feed
from django.shortcuts import redirect
from django.utils.feedgenerator import Atom1Feed

from .models import Article
from .views import _get_entity

FEED_LENGTH = 20


class LatestArticlesFeed(Feed):
    """RSS of the latest published articles, at /feed/."""

    description_template = None

    def title(self):
        return settings.SITE_NAME

    def link(self):
        return "/"

    def description(self):
        return settings.SITE_DESCRIPTION

    def items(self):
        return Article.objects.published().with_entities()[:FEED_LENGTH]

    def item_title(self, item):
        return item.title

    def item_description(self, item):
        return item.plain_summary()

    def item_pubdate(self, item):
        return item.published_at

    def item_updateddate(self, item):
        return item.updated_at

    def item_author_name(self, item):
        return item.byline or None

    def item_categories(self, item):
        return [entity.name for entity in item.tagged_entities()]


class LatestArticlesAtomFeed(LatestArticlesFeed):
    feed_type = Atom1Feed
    subtitle = LatestArticlesFeed.description


class EntityFeed(LatestArticlesFeed):
    """RSS of one entity's articles, at /people/<slug>/feed/ and the like."""

    def __call__(self, request, *args, **kwargs):
        entity, moved = _get_entity(kwargs["kind_path"], kwargs["slug"])
        if moved:
            return redirect(moved.get_feed_url(), permanent=True)
        return super().__call__(request, *args, **kwargs)

    def get_object(self, request, kind_path, slug):
        return _get_entity(kind_path, slug)[0]

    def title(self, obj):
        return f"{obj.name} — {settings.SITE_NAME}"

    def link(self, obj):
        return obj.get_absolute_url()

    def description(self, obj):
        return obj.description or f"The latest articles about {obj.name}."

    def items(self, obj):
        return Article.objects.published().filter(tags__entity=obj).with_entities()[:FEED_LENGTH]
