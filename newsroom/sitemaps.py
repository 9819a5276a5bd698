from django.contrib.sitemaps import Sitemap
from django.urls import reverse

from .models import Article, Entity


class ArticleSitemap(Sitemap):
    changefreq = "weekly"
    priority = 0.8

    def items(self):
        return Article.objects.published().only("slug", "updated_at")

    def lastmod(self, article):
        return article.updated_at


class EntitySitemap(Sitemap):
    changefreq = "daily"
    priority = 0.5

    def items(self):
        return Entity.objects.filter(tags__article__in=Article.objects.published()).distinct()

    def lastmod(self, entity):
        return entity.updated_at


class PagesSitemap(Sitemap):
    changefreq = "hourly"
    priority = 1.0

    def items(self):
        return ["home", "entity_index"]

    def location(self, name):
        return reverse(name)


SITEMAPS = {"pages": PagesSitemap, "articles": ArticleSitemap, "entities": EntitySitemap}
