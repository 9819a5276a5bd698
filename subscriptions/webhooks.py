"""An email provider's webhooks, through django-anymail's tracking signal.

django-anymail receives and checks the provider's POSTs at
/anymail/<provider>/tracking/ and sends its `tracking` signal; apps.py
connects tracking_event() to it when anymail is installed.

A webhook that acts on anyone's POST lets a stranger suppress any reader
with a forged "hard bounce", and django-anymail accepts unauthenticated
POSTs when no secret is set (it only warns). So the host site mounts
tracking_urls(): only the providers' views that can authenticate a request,
with ANYMAIL's WEBHOOK_SECRET (HTTP basic auth) or the provider's own
signature (Mailgun's signing key, SendGrid's verification key, …), as
django-anymail itself checks them. checks.py says so at start-up when the
provider in EMAIL_BACKEND has none.
"""

import warnings

from django.core.exceptions import ImproperlyConfigured, ValidationError

from .models import Subscriber, normalize_email


def tracking_event(sender, event, esp_name, **kwargs):
    """django-anymail's tracking signal (an email provider's webhook): a
    bounce, a complaint or a rejected invalid address suppresses the
    address; an unsubscribe at the provider unsubscribes it."""
    from anymail.signals import EventType, RejectReason

    try:
        email = normalize_email(event.recipient)
    except ValidationError:
        return
    # Providers may change the case of the local part we keep as typed.
    for subscriber in Subscriber.objects.filter(email__iexact=email):
        if event.event_type in (EventType.BOUNCED, EventType.COMPLAINED) or (
            event.event_type == EventType.REJECTED and event.reject_reason == RejectReason.INVALID
        ):
            subscriber.suppress()
        elif event.event_type == EventType.UNSUBSCRIBED:
            subscriber.unsubscribe()


def _is_tracking(pattern):
    # "mandrill_webhook" is Mandrill's combined endpoint (tracking included).
    return pattern.name.endswith("_tracking_webhook") or pattern.name == "mandrill_webhook"


def _authenticates(pattern):
    """Whether the view of one of anymail's URL patterns can authenticate a
    request with the settings as they are. Builds the view as anymail does
    for each request: a provider whose required key is missing fails there
    (ImproperlyConfigured), and would answer every POST with a 500."""
    view_function = pattern.callback
    with warnings.catch_warnings():
        # "Your Anymail webhooks are insecure", SendGrid's end of support:
        # the answer here is to not mount the view.
        warnings.simplefilter("ignore")
        try:
            view = view_function.view_class(**view_function.view_initkwargs)
        except ImproperlyConfigured:
            return False
    if getattr(view, "webhook_key", True) is None:
        return False  # Mandrill's key is required but checked only when a POST comes.
    if getattr(view, "basic_auth", None):
        return True  # WEBHOOK_SECRET: every view checks it.
    # anymail turns its "insecure" warning off when the provider's signature
    # is verified (Mailgun, MailerSend, Postal, Unisender Go always; SendGrid,
    # Resend, Mailtrap once their key is set).
    return not view.warn_if_no_basic_auth


def tracking_urls():
    """django-anymail's tracking webhooks that authenticate every request
    (see _authenticates), for the host site's URLconf:
    `path("anymail/", include((webhooks.tracking_urls(), "anymail")))`. Read when the
    URLconf loads: a provider whose webhooks are not secured is not mounted
    (404), so a forged event changes nothing. [] without django-anymail."""
    try:
        from anymail import urls
    except ImportError:
        return []
    return [p for p in urls.urlpatterns if _is_tracking(p) and _authenticates(p)]


def unsecured_provider(backend):
    """For an EMAIL_BACKEND path, the name of its django-anymail provider
    when none of that provider's tracking webhooks authenticates requests;
    None for another backend, a secured provider, or one django-anymail has
    no tracking webhook for (nothing to secure)."""
    prefix = "anymail.backends."
    if not backend.startswith(prefix):
        return None
    esp = backend.removeprefix(prefix).split(".")[0]
    if esp in ("test", "console"):
        return None
    try:
        from anymail import urls
    except ImportError:
        return esp

    # A backend module names its provider as the webhook URLs do.
    views = [
        p
        for p in urls.urlpatterns
        if _is_tracking(p) and esp.startswith(p.name.split("_tracking")[0])
    ]
    if not views or any(_authenticates(p) for p in views):
        return None
    return esp
