from django.conf import settings
from django.contrib import admin
from django.contrib.sitemaps.views import sitemap
from django.templatetags.static import static
from django.urls import include, path, re_path, register_converter
from django.views.generic import RedirectView
from django.views.static import serve

import subscriptions.urls
from subscriptions import webhooks

from . import feeds, views
from .models import Entity
from .sitemaps import SITEMAPS
from .views import cached_page


class KindPathConverter:
    """people|organizations|places|topics: the entity kinds' URL prefixes."""

    regex = "|".join(Entity.KIND_PATHS.values())

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(KindPathConverter, "kind")

urlpatterns = [
    path("", views.home, name="home"),
    path("articles/<slug:slug>/", views.article_detail, name="article"),
    path("preview/<int:pk>/", views.article_preview, name="article_preview"),
    path("entities/", views.entity_index, name="entity_index"),
    path("<kind:kind_path>/", views.entity_index, name="entity_kind_index"),
    path("<kind:kind_path>/<slug:slug>/", views.entity_detail, name="entity"),
    path("<kind:kind_path>/<slug:slug>/feed/", cached_page(feeds.EntityFeed()), name="entity_feed"),
    path("search/", views.search, name="search"),
    path("feed/", cached_page(feeds.LatestArticlesFeed()), name="feed"),
    path("feed/atom/", cached_page(feeds.LatestArticlesAtomFeed()), name="feed_atom"),
    path("sitemap.xml", sitemap, {"sitemaps": SITEMAPS}, name="sitemap"),
    path("robots.txt", views.robots_txt, name="robots_txt"),
    # Browsers ask for it whatever the page's <link rel="icon"> says.
    path("favicon.ico", RedirectView.as_view(url=static("newsroom/favicon.svg"), permanent=True)),
    path("admin/", admin.site.urls),
    path("ckeditor/", include("ckeditor_uploader.urls")),
    # An email provider's bounce and complaint webhooks (django-anymail):
    # only those that authenticate requests (a secret or a signature), so
    # nobody can forge a bounce. Read once, when the URLconf loads.
    path("anymail/", include((webhooks.tracking_urls(), "anymail"))),
    path("", include("subscriptions.urls")),
    # The newsletter archive (/newsletter/) and each email's web version.
    path("", include(subscriptions.urls.archive)),
]

if settings.SERVE_MEDIA:
    urlpatterns += [
        re_path(r"^media/(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT}),
    ]
