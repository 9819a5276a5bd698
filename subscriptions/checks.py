"""System checks (run by manage.py migrate, check, runserver…): what a
site must be told at start-up."""

from django.conf import settings
from django.core.checks import Warning, register


@register()
def webhook_secret(app_configs, **kwargs):
    """An email provider without secured webhooks never reports a bounce or
    a complaint: addresses that bounce are mailed again and again."""
    from .webhooks import unsecured_provider

    esp = unsecured_provider(getattr(settings, "EMAIL_BACKEND", ""))
    if not esp:
        return []
    return [
        Warning(
            f"EMAIL_BACKEND sends through {esp} (django-anymail), but its webhooks "
            "cannot authenticate a request, so they are not mounted: bounces and "
            "complaints will NEVER suppress an address.",
            hint="Set ANYMAIL_WEBHOOK_SECRET (ANYMAIL['WEBHOOK_SECRET'], 'user:password') "
            "and give the provider https://user:password@<site>/anymail/"
            f"{esp}/tracking/, or set the provider's webhook signing key.",
            id="subscriptions.W001",
        )
    ]
