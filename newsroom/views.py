import contextlib
import logging
import re
from functools import wraps

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .models import CONTENT_VERSION_KEY, Article, Entity, EntityRedirect, content_version

logger = logging.getLogger(__name__)

SEARCH_MAX_LENGTH = 200

# Public pages are cached whole, under a key holding the content version:
# every change to an article, an entity or a tag bumps the version
# (models.content_changed), so an edit or a publication is visible at once
# and nothing has to find the pages it touched. The page is cached with a
# stand-in for the reader's CSRF token, put back on each request.
PAGE_CACHE_SECONDS = 300
CSRF_STANDIN = "NEWSROOMCSRFSTANDIN"
CSRF_FIELD = re.compile(rb'(name="csrfmiddlewaretoken" value=")[^"]*(")')


def cached_page(view):
    """Serve GET responses of `view` from the cache; anonymous or not (the
    public pages show nobody's account)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        page = request.GET.get("page", "")
        if request.method != "GET" or not (page.isdigit() or page == "") or len(page) > 6:
            return view(request, *args, **kwargs)
        # The path and the page number only: other query strings render the
        # same page, and must not fill the cache with copies of it. The
        # version and the page come back in one round trip.
        key = f"page:{request.path}:{page}"
        try:
            found = cache.get_many([CONTENT_VERSION_KEY, key])
            version = found.get(CONTENT_VERSION_KEY) or content_version()
        except Exception:  # noqa: BLE001 - the cache is down: serve uncached
            logger.warning("Page cache unavailable", exc_info=True)
            return view(request, *args, **kwargs)
        cached = found.get(key)
        if cached is None or cached[0] != version:
            response = view(request, *args, **kwargs)
            if response.status_code != 200 or response.streaming:
                return response
            body = CSRF_FIELD.sub(rb"\1" + CSRF_STANDIN.encode() + rb"\2", response.content)
            cached = (version, body, response["Content-Type"])
            with contextlib.suppress(Exception):
                cache.set(key, cached, PAGE_CACHE_SECONDS)
        _, body, content_type = cached
        if CSRF_STANDIN.encode() in body:
            token = get_token(request)  # also makes sure the reader has the cookie
            body = body.replace(CSRF_STANDIN.encode(), token.encode())
        response = HttpResponse(body, content_type=content_type)
        patch_vary_headers(response, ["Cookie"])
        return response

    return wrapper


def site_context(request):
    """Template context every page needs: the site's name and its sections."""
    return {
        "site_name": settings.SITE_NAME,
        "site_url": settings.SITE_URL,
        "site_description": settings.SITE_DESCRIPTION,
        "site_logo_url": settings.SITE_LOGO_URL,
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
@cached_page
def home(request):
    page = _page(request, Article.objects.published().with_entities())
    stories = list(page)
    # The newest story leads the first page, larger and with its image.
    lead = stories.pop(0) if page.number == 1 and stories else None
    return render(request, "newsroom/home.html", {"page": page, "lead": lead, "stories": stories})


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
@cached_page
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
@cached_page
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
@cached_page
def entity_detail(request, kind_path, slug):
    entity, moved = _get_entity(kind_path, slug)
    if moved:
        return redirect(moved, permanent=True)
    articles = Article.objects.published().filter(tags__entity=entity).with_entities()
    return render(
        request, "newsroom/entity_detail.html", {"entity": entity, "page": _page(request, articles)}
    )


def clean_query(value):
    """The words of a search: control characters (a NUL that SQLite reads
    as the end of the pattern, so as "match everything"; PostgreSQL refuses
    it) are spaces, runs of space one."""
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


@require_safe
def search(request):
    query = clean_query(request.GET.get("q", ""))
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


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: a form posted without a valid token (an old tab,
    cookies blocked) gets the site's page and a way back to the form, not
    Django's bare one. The form is at the address it posted to (a GET of
    /subscribe/ or /admin/login/ shows it)."""
    back_url = request.path if url_has_allowed_host_and_scheme(request.path, None) else "/"
    return render(request, "403_csrf.html", {"back_url": back_url}, status=403)


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
