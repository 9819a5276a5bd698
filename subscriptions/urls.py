from django.urls import path

from . import feeds, views

app_name = "subscriptions"

# Tokens are signed (django.core.signing): letters, digits, "-", "_" and ":".
urlpatterns = [
    path("subscribe/", views.subscribe, name="subscribe"),
    path("subscribe/topics/", views.topic_search, name="topic_search"),
    path("subscribe/confirm/<str:token>/", views.confirm, name="confirm"),
    path("subscribe/preferences/<str:token>/", views.preferences, name="preferences"),
    path("subscribe/preferences/<str:token>/data/", views.data_link, name="data_link"),
    path("subscribe/data/<str:token>/", views.erase, name="erase"),
    path("subscribe/data/<str:token>/data.json", views.download_data, name="download_data"),
    path("subscribe/unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("subscribe/one-click/<str:token>/", views.one_click, name="one_click"),
]

# The public archive of what was emailed, and each email's web version.
# Opt-in: the host site mounts it, e.g. path("", include(subscriptions.urls.archive)).
# Email-only posts need it (their only address is their web version's).
archive = (
    [
        path("newsletter/", views.archive, name="archive"),
        path("newsletter/feed/", feeds.ArchiveFeed(), name="archive_feed"),
        path("newsletter/feed/atom/", feeds.ArchiveAtomFeed(), name="archive_feed_atom"),
        path("email/<uuid:key>/", views.web_version, name="web_version"),
    ],
    "newsletter",
)
