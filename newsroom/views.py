from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .models import Article, Entity, EntityRedirect

SEARCH_MAX_LENGTH = 200


def site_context(request):
    """Template context every page needs: the site's name and its sections."""
    return {
        "site_name": settings.SITE_NAME,
        "site_url": settings.SITE_URL,
        "site_description": settings.SITE_DESCRIPTION,
        "entity_sections": [
            (Entity.KIND_PATHS[kind], Entity.KIND_PLURALS[kind]) for kind in Entity.Kind
        ],
    }


def _page(request, queryset):
    paginator = Paginator(queryset, settings.NEWSROOM_ARTICLES_PER_PAGE)
    return paginator.get_page(request.GET.get("page"))


def _kind_for_path(kind_path):
    return next((k for k, path in Entity.KIND_PATHS.items() if path == kind_path), None)


@require_safe
def home(request):
    page = _page(request, Article.objects.published().with_entities())
    return render(request, "newsroom/home.html", {"page": page})


def _render_article(request, article, preview=False):
    return render(
        request,
        "newsroom/article.html",
        {
            "article": article,
            "related": list(article.related().with_entities()),
            "preview": preview,
        },
    )


@require_safe
def article_detail(request, slug):
    article = get_object_or_404(
        Article.objects.published().with_entities().select_related("author"), slug=slug
    )
    return _render_article(request, article)


@never_cache
@staff_member_required
@require_safe
def article_preview(request, pk):
    """Any article, as readers will see it; staff only, never cached."""
    article = get_object_or_404(Article.objects.with_entities().select_related("author"), pk=pk)
    response = _render_article(request, article, preview=True)
    response["X-Robots-Tag"] = "noindex"
    return response


@require_safe
def entity_index(request, kind_path=None):
    kind = _kind_for_path(kind_path)
    entities = Entity.objects.order_by("kind", "name")
    if kind:
        entities = entities.filter(kind=kind)
    sections = {}
    for entity in entities:
        sections.setdefault(entity.kind, []).append(entity)
    return render(
        request,
        "newsroom/entity_index.html",
        {
            "kind": kind,
            "title": Entity.KIND_PLURALS[kind] if kind else "People, organisations and places",
            "sections": [
                (Entity.KIND_PLURALS[k], Entity.KIND_PATHS[k], sections[k])
                for k in Entity.Kind
                if k in sections
            ],
        },
    )


def _get_entity(kind_path, slug):
    """(entity, redirect_response): follows renamed slugs and changed kinds."""
    entity = Entity.objects.filter(slug=slug).first()
    if entity is None:
        old = get_object_or_404(EntityRedirect.objects.select_related("entity"), old_slug=slug)
        return None, old.entity
    if entity.kind_path != kind_path:
        return None, entity
    return entity, None


@require_safe
def entity_detail(request, kind_path, slug):
    entity, moved = _get_entity(kind_path, slug)
    if moved:
        return redirect(moved, permanent=True)
    articles = Article.objects.published().filter(tags__entity=entity).with_entities()
    return render(
        request, "newsroom/entity_detail.html", {"entity": entity, "page": _page(request, articles)}
    )


@require_safe
def search(request):
    query = request.GET.get("q", "").strip()
    if len(query) > SEARCH_MAX_LENGTH:
        return render(
            request,
            "newsroom/search.html",
            {"query": "", "error": f"Search for at most {SEARCH_MAX_LENGTH} characters."},
            status=400,
        )
    page = None
    entities = []
    if query:
        page = _page(request, Article.objects.published().search(query).with_entities())
        entities = Entity.objects.filter(name__icontains=query)[:10]
    return render(
        request, "newsroom/search.html", {"query": query, "page": page, "entities": entities}
    )


@require_safe
def robots_txt(request):
    lines = [
        "User-agent: *",
        "Disallow: /admin/",
        "Disallow: /preview/",
        "Disallow: /search/",
        f"Sitemap: {settings.SITE_URL}/sitemap.xml",
    ]
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain")
