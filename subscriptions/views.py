from django.http import HttpResponse
from django.views.decorators.http import require_POST


@require_POST
def subscribe(request):
    # Replaced by the double opt-in flow (issue 3).
    return HttpResponse("Subscriptions open soon.", status=503, content_type="text/plain")
