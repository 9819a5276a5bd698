"""RSS and Atom of the newsletter archive: the latest emails, each linking
its web version."""

from django.contrib.syndication.views import Feed
from django.urls import reverse
from django.utils.feedgenerator import Atom1Feed

from .conf import conf
from .models import Mailing

FEED_LENGTH = 20


class ArchiveFeed(Feed):
    description_template = None

    def title(self):
        return f"{conf.site_name} newsletter"

    def link(self):
        return conf.absolute_url(reverse("newsletter:archive"))

    def description(self):
        return f"Every post {conf.site_name} has sent by email."

    def items(self):
        return Mailing.objects.archived()[:FEED_LENGTH]

    def item_title(self, item):
        return item.title

    def item_description(self, item):
        return item.summary

    def item_link(self, item):
        return conf.absolute_url(item.get_absolute_url())

    def item_pubdate(self, item):
        return item.send_at  # when it went out


class ArchiveAtomFeed(ArchiveFeed):
    feed_type = Atom1Feed
    subtitle = ArchiveFeed.description
