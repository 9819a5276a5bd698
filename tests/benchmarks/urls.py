"""The site's URLs plus `/bench/trivial/`: the least a Django view can do
behind the same middleware, served by the same gunicorn as the real pages."""

from django.http import HttpResponse
from django.urls import path

from newsroom.urls import urlpatterns as site_urlpatterns


def trivial(request):
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [path("bench/trivial/", trivial), *site_urlpatterns]
