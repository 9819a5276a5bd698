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


@register()
def batch_size_fills_provider_calls(app_configs, **kwargs):
    """A batch's readers are what one provider call can carry: a batch
    smaller than the provider's per-call limit sends calls half full."""
    from .conf import conf
    from .providers import PROVIDERS

    provider = PROVIDERS.get(getattr(settings, "EMAIL_BACKEND", ""))
    if provider is None:
        return []
    per_call = min(conf.RECIPIENTS_PER_CALL or provider.per_call, provider.per_call)
    if conf.BATCH_SIZE >= per_call:
        return []
    return [
        Warning(
            f"EMAIL_BACKEND sends through {provider.name}'s batch API, up to {per_call:,} "
            f"readers per call, but SUBSCRIPTIONS_BATCH_SIZE is {conf.BATCH_SIZE:,}: each "
            f"call carries at most {conf.BATCH_SIZE:,} readers.",
            hint=f"Set SUBSCRIPTIONS_BATCH_SIZE to {per_call} (or a multiple of it).",
            id="subscriptions.W002",
        )
    ]
