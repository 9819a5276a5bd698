from django.urls import path

from . import views

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
    # Engagement stats (stats.py): the pixel and the click redirect.
    path("subscribe/o/<str:mailing>/<str:message>/", views.stats_open, name="stats_open"),
    path("subscribe/c/<str:link>/<str:message>/", views.stats_click, name="stats_click"),
]
