"""An email provider's webhooks, through django-anymail's tracking signal.

django-anymail receives and checks the provider's POSTs at
/anymail/<provider>/tracking/ and sends its `tracking` signal; apps.py
connects tracking_event() to it when anymail is installed.
"""

from django.core.exceptions import ValidationError

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
