from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscriptions"

    def ready(self):
        from . import checks  # noqa: F401 - registers the system checks

        # With an email provider through django-anymail, its bounce and
        # complaint webhooks suppress addresses (webhooks.tracking_event).
        try:
            from anymail.signals import tracking
        except ImportError:
            return
        from .webhooks import tracking_event

        tracking.connect(tracking_event, dispatch_uid="subscriptions.webhooks.tracking_event")
