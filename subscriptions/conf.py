"""The app's settings, with their defaults, in one place.

A site changes one by defining ``SUBSCRIPTIONS_<NAME>`` in its settings;
``conf.NAME`` reads it at the moment of use, so ``override_settings`` works.
"""

from datetime import timedelta

from django.conf import settings
from django.utils.module_loading import import_string

DEFAULTS = {
    # Dotted path to a callable returning (key, label) pairs: what readers may
    # follow. None means readers can only follow everything.
    "TOPICS": None,
    # How long the link in a confirmation email works (timedelta or seconds).
    "CONFIRM_MAX_AGE": timedelta(days=7),
    # How long unsubscribe and preferences links work; None: for ever (links
    # in old emails must keep letting readers leave).
    "LINK_MAX_AGE": None,
    # A pending address gets at most one confirmation email per window (a timedelta).
    "CONFIRMATION_WINDOW": timedelta(hours=1),
    # django-ratelimit rates for POST /subscribe/ ("count/period"); None: off.
    "RATELIMIT_IP": "20/h",
    "RATELIMIT_EMAIL": "5/h",
    # Sender of every email; None: DEFAULT_FROM_EMAIL.
    "FROM_EMAIL": None,
    # Name and absolute address of the site, for emails and consent records;
    # None: settings.SITE_NAME and settings.SITE_URL.
    "SITE_NAME": None,
    "SITE_URL": None,
}


class Conf:
    def __getattr__(self, name):
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(settings, f"SUBSCRIPTIONS_{name}", DEFAULTS[name])

    @property
    def confirm_max_age(self):
        max_age = self.CONFIRM_MAX_AGE
        return max_age if isinstance(max_age, timedelta) else timedelta(seconds=max_age)

    @property
    def from_email(self):
        return self.FROM_EMAIL or settings.DEFAULT_FROM_EMAIL

    @property
    def site_name(self):
        return self.SITE_NAME or getattr(settings, "SITE_NAME", "")

    @property
    def site_url(self):
        return (self.SITE_URL or getattr(settings, "SITE_URL", "")).rstrip("/")

    def absolute_url(self, path):
        return self.site_url + path

    def topics(self):
        """[(key, label), …] from the host site's provider."""
        if not self.TOPICS:
            return []
        return [(str(key), str(label)) for key, label in import_string(self.TOPICS)()]


conf = Conf()
