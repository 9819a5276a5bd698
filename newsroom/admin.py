from dataclasses import asdict

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count
from django.http import Http404, HttpResponseNotAllowed, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join

import subscriptions

from .extract import extract
from .models import Article, ArticleEntity, Entity, EntityRedirect

admin.site.site_header = settings.SITE_NAME
admin.site.site_title = f"{settings.SITE_NAME} admin"
admin.site.index_title = "Write, tag and publish"


class ArticleEntityInline(admin.TabularInline):
    model = ArticleEntity
    extra = 1
    autocomplete_fields = ["entity"]
    verbose_name = "tagged entity"
    verbose_name_plural = "Who and what this article is about"


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    list_display = ["title", "status", "published_at", "byline", "entity_list", "preview_link"]
    list_filter = [
        "status",
        "email_only",
        ("entities", admin.RelatedOnlyFieldListFilter),
        ("entities__kind", admin.ChoicesFieldListFilter),
        "published_at",
    ]
    search_fields = ["title", "summary", "byline", "entities__name"]
    date_hierarchy = "published_at"
    list_select_related = ["author"]
    inlines = [ArticleEntityInline]
    actions = ["publish", "unpublish"]
    readonly_fields = [
        "preview_link",
        "mailing_progress",
        "email_preview_link",
        "created_at",
        "updated_at",
    ]
    formfield_overrides = {
        models.TextField: {"widget": forms.Textarea(attrs={"rows": 3, "cols": 80})}
    }
    fieldsets = [
        (None, {"fields": ["title", "summary", "body", "byline"]}),
        ("Lead image", {"fields": ["lead_image", "lead_image_alt", "lead_image_caption"]}),
        (
            "Publishing",
            {
                "fields": [
                    "status",
                    "published_at",
                    "email_subscribers",
                    "email_only",
                    "mailing_progress",
                    "email_preview_link",
                    "slug",
                    "preview_link",
                ]
            },
        ),
        ("History", {"fields": ["author", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).with_entities()

    def get_urls(self):
        suggest = path(
            "suggest-entities/",
            self.admin_site.admin_view(self.suggest_entities),
            name="newsroom_article_suggest_entities",
        )
        email_preview = path(
            "<path:object_id>/email-preview/",
            self.admin_site.admin_view(self.email_preview),
            name="newsroom_article_email_preview",
        )
        return [suggest, email_preview, *super().get_urls()]

    def suggest_entities(self, request):
        """The "Suggested entities" panel (static/newsroom/suggest.js): the
        entities the posted title and body name. It tags and creates nothing;
        the editor chooses. POST because a body does not fit in a URL."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        result = extract(request.POST.get("title", ""), request.POST.get("body", ""))
        return JsonResponse(
            {"known": [asdict(k) for k in result.known], "new": [asdict(c) for c in result.new]}
        )

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not self.has_publish_permission(request):
            # Authors write; only editors decide when an article goes live.
            fields += ["status", "published_at"]
        return fields

    def has_publish_permission(self, request):
        return request.user.has_perm("newsroom.publish_article")

    def get_view_on_site_url(self, obj=None):
        if obj is None:
            return None
        if obj.is_public and not obj.email_only:
            return obj.get_absolute_url()
        return obj.get_preview_url()

    def save_model(self, request, obj, form, change):
        if obj.author_id is None:
            obj.author = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="Entities")
    def entity_list(self, obj):
        return ", ".join(entity.name for entity in obj.tagged_entities())

    @admin.display(description="Email to subscribers")
    def mailing_progress(self, obj):
        mailing = subscriptions.mailing_for(obj) if obj.pk else None
        if mailing is None:
            return (
                "Not emailed."
                if obj.is_public
                else "Emailed when it goes live, if “Email this post” is ticked."
            )
        url = reverse("admin:subscriptions_mailing_change", args=[mailing.pk])
        return format_html(
            '<a href="{}">{}</a>: {} sent, {} failed, {} pending, {} waiting for digests',
            url,
            mailing.get_status_display(),
            mailing.sent_count,
            mailing.failed_count,
            mailing.pending_count,
            mailing.digest_count,
        )

    # The email preview: the article's email as a reader will get it, for a
    # sample reader (subscriptions.preview), before it is published.

    def email_preview(self, request, object_id):
        article = self.get_object(request, object_id)
        if article is None:
            raise Http404
        if not self.has_view_permission(request, article):
            raise PermissionDenied
        email = subscriptions.preview(article)
        response = TemplateResponse(
            request,
            "admin/newsroom/article/email_preview.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "original": article,
                "title": f"Email preview: {article.title}",
                "email": email,
            },
        )
        add_never_cache_headers(response)
        return response

    @admin.display(description="Email preview")
    def email_preview_link(self, obj):
        if not obj.pk:
            return "Save the article to preview its email."
        return format_html(
            '<a href="{}" target="_blank" class="email-preview-link">Preview email</a> '
            '<span class="help">as a subscriber will get it, HTML and text</span>',
            reverse("admin:newsroom_article_email_preview", args=[obj.pk]),
        )

    @admin.display(description="Preview")
    def preview_link(self, obj):
        if not obj.pk:
            return "Save the article to preview it."
        return format_html('<a href="{}" target="_blank">Preview</a>', obj.get_preview_url())

    @admin.action(description="Publish the selected articles now", permissions=["publish"])
    def publish(self, request, queryset):
        published = [article for article in queryset if article.publish()]
        self.message_user(request, f"Published {len(published)} article(s).", messages.SUCCESS)

    @admin.action(
        description="Unpublish the selected articles (back to draft)", permissions=["publish"]
    )
    def unpublish(self, request, queryset):
        for article in queryset:
            article.unpublish()
        self.message_user(request, f"Unpublished {len(queryset)} article(s).", messages.SUCCESS)


class EntityRedirectInline(admin.TabularInline):
    model = EntityRedirect
    extra = 0
    verbose_name_plural = "Old addresses (they redirect here)"
    fields = ["old_slug"]
    readonly_fields = ["old_slug"]
    can_delete = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Entity)
class EntityAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "slug", "article_count", "aliases_short"]
    list_filter = ["kind"]
    search_fields = ["name", "aliases", "slug"]
    inlines = [EntityRedirectInline]
    fields = ["name", "kind", "aliases", "description", "same_as", "slug"]

    def get_queryset(self, request):
        # Meta.ordering does not apply to aggregate queries: order explicitly.
        return super().get_queryset(request).annotate(article_count=Count("tags")).order_by("name")

    @admin.display(description="Articles", ordering="article_count")
    def article_count(self, obj):
        return obj.article_count

    @admin.display(description="Aliases")
    def aliases_short(self, obj):
        return format_html_join(", ", "{}", ((alias,) for alias in obj.alias_list[:5]))
