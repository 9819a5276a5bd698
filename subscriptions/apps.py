from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscriptions"

    def ready(self):
        # With an email provider through django-anymail, its bounce and
        # complaint webhooks suppress addresses (models.esp_tracking_event).
        try:
            from anymail.signals import tracking
        except ImportError:
            return
        from .models import esp_tracking_event

        tracking.connect(esp_tracking_event, dispatch_uid="subscriptions.esp_tracking_event")
