import time

from django.core.paginator import Paginator
from django.core.signals import setting_changed
from django.http import HttpResponse, HttpResponseNotFound, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone, translation
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django_ratelimit.core import is_ratelimited

from . import delivery, emails, ratelimits, stats
from .conf import conf
from .forms import FormKind, PreferencesForm, SubscribeForm, wording
from .models import Consent, Mailing, Subscriber
from .tokens import DATA, BadToken


def _rate_limited(request, group, key, rate):
    if not rate:
        return False
    return is_ratelimited(request, group=group, key=key, rate=rate, increment=True)


def _over_limit(request, email=None):
    """Count a subscribe POST against the per-IP limit and, when `email` is
    given and the IP is under its limit, against that address's (one round
    trip, ratelimits.py); "ip", "email" or None."""
    limits, names = [], []
    if conf.RATELIMIT_IP:  # the IP only when asked: REMOTE_ADDR may be empty
        limits.append(
            ("subscriptions.subscribe.ip", ratelimits.client_ip(request), conf.RATELIMIT_IP)
        )
        names.append("ip")
    if email is not None and conf.RATELIMIT_EMAIL:
        limits.append(("subscriptions.subscribe.email", email, conf.RATELIMIT_EMAIL))
        names.append("email")
    over = ratelimits.first_over(request, limits)
    return None if over is None else names[over]


# Topics offered beside the reader's own: the provider's suggestions, or
# what they searched for. Never the whole list (a site may have 10,000).
TOPICS_OFFERED = 12


def _topics_context(request, chosen_keys):
    """The topics part of the subscribe and preferences pages: what the
    reader chose ([(key, label)], as checked boxes), and the suggestions or
    the results of their search (unchecked boxes). Works without JavaScript:
    the "Find" button posts the form back with `topic_q`, changing nothing."""
    query = " ".join(request.POST.get("topic_q", request.GET.get("topic_q", "")).split())[:100]
    labels = conf.topic_labels(chosen_keys)
    chosen = sorted(((k, labels[k]) for k in set(chosen_keys) if k in labels), key=lambda t: t[1])
    offered = [
        (key, label)
        for key, label in conf.search_topics(query, limit=TOPICS_OFFERED + len(chosen))
        if key not in labels
    ][:TOPICS_OFFERED]
    return {
        "topics_enabled": bool(conf.TOPICS),
        "chosen_topics": chosen,
        "offered_topics": offered,
        "topic_query": query,
    }


@require_safe
def topic_search(request):
    """The topics matching ?q=, as JSON, for the search box of the subscribe
    and preferences pages (static/subscriptions/topics.js); the pages work
    without it."""
    query = request.GET.get("q", "")[:100]
    topics = conf.search_topics(query, limit=TOPICS_OFFERED)
    response = JsonResponse({"query": query, "topics": [list(t) for t in topics]})
    response["Cache-Control"] = "max-age=60"
    return response


def _finding(request):
    """A press of "Find" with something to find: search, save nothing."""
    return "find" in request.POST and request.POST.get("topic_q", "").strip()


def _unbound_copy(form_class, data):
    """The form as the reader left it, unbound: no errors shown while they
    are still choosing."""
    initial = {name: data.get(name, "") for name in form_class.base_fields}
    initial["topics"] = data.getlist("topics")
    return form_class(initial=initial)


def _subscribe_page(request, form, status=200):
    heading, text = wording(FormKind.PAGE)
    keys = form["topics"].value() or []
    return render(
        request,
        "subscriptions/subscribe.html",
        {"form": form, "heading": heading, "text": text, **_topics_context(request, keys)},
        status=status,
    )


class SamePage:
    """A page every reader gets alike — the answer to a sign-up, which must
    tell nobody anything — rendered at most once a minute (and once a day,
    for the dates in the site's header) per process, then copied: rendering
    it was a fifth of a sign-up's time. A rendering that looked at the
    reader (their session or account, the CSRF token, messages) is not
    kept: such a page is rendered for each request. One is kept per
    language (a site with LocaleMiddleware answers each reader in theirs).
    Forgotten when a setting changes."""

    SECONDS = 60

    def __init__(self, template_name):
        self.template_name = template_name
        self.kept = {}  # language: (until, date, content)
        setting_changed.connect(self.forget, weak=False)

    def forget(self, **kwargs):
        self.kept = {}

    def __call__(self, request):
        now, today, language = time.time(), timezone.localdate(), translation.get_language()
        kept = self.kept.get(language)
        if kept and now < kept[0] and kept[1] == today:
            return HttpResponse(kept[2])
        before = _what_was_read(request)
        response = render(request, self.template_name)
        after = _what_was_read(request)
        if before == after == (False, False, False):
            self.kept[language] = (now + self.SECONDS, today, response.content)
        return response


def _what_was_read(request):
    """Whether the reader's session (so their account), CSRF token or
    messages were read while answering this request."""
    session = getattr(request, "session", None)
    messages = getattr(request, "_messages", None)
    return (
        bool(session is not None and session.accessed),
        bool(request.META.get("CSRF_COOKIE_NEEDS_UPDATE")),
        bool(getattr(messages, "used", False)),
    )


_check_inbox = SamePage("subscriptions/check_inbox.html")


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def subscribe(request):
    """The full subscribe page (GET), and where every subscribe form posts.

    Whatever the address's state, a valid POST gets the same page: nobody
    can learn from it who subscribes.
    """
    if request.method != "POST":
        initial = {"form": FormKind.PAGE, "frequency": Subscriber.Frequency.INSTANT}
        return _subscribe_page(request, SubscribeForm(initial=initial))
    if _finding(request):
        return _subscribe_page(request, _unbound_copy(SubscribeForm, request.POST))

    form = SubscribeForm(request.POST)
    bot = form.is_bot()
    valid = not bot and form.is_valid()
    email = form.cleaned_data["email"] if valid else None
    # Every POST counts against the per-IP limit; a valid address under it
    # against the per-address limit too, in the same round trip.
    over = _over_limit(request, email)
    if over == "ip":
        return render(request, "subscriptions/rate_limited.html", status=429)
    if bot:
        return _check_inbox(request)
    if not valid:
        return _subscribe_page(request, form, status=400)

    # Over the per-address limit the reader sees the usual page and nothing
    # is sent: answering differently would tell who was just subscribed.
    if over != "email":
        delivery.subscribe(
            email,
            name=form.cleaned_data["name"],
            frequency=form.cleaned_data["frequency"],
            topics=form.cleaned_data["topics"],
            consent=Consent(
                wording=form.consent_wording(),
                page=conf.absolute_url(form.cleaned_data["source"] or request.path),
                ip=ratelimits.consent_ip(request),
                user_agent=request.headers.get("User-Agent", ""),
            ),
        )
    return _check_inbox(request)


def _from_token(request, token, purpose):
    """(subscriber, None), or (None, an error page) for a bad link."""
    try:
        return Subscriber.from_token(token, purpose), None
    except BadToken as e:
        return None, render(
            request, "subscriptions/bad_link.html", {"message": e.message}, status=400
        )


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def confirm(request, token):
    # GET only shows the button: mail scanners open links, people press buttons.
    subscriber, error = _from_token(request, token, Subscriber.CONFIRM)
    if error:
        return error
    if request.method == "POST":
        delivery.confirm(subscriber)
    if subscriber.status == Subscriber.Status.CONFIRMED:
        return render(
            request,
            "subscriptions/welcome.html",
            {"subscriber": subscriber, "preferences_url": subscriber.preferences_path()},
        )
    if subscriber.status != Subscriber.Status.PENDING:
        return render(
            request,
            "subscriptions/bad_link.html",
            {"message": "This subscription was ended. To get our emails again, subscribe again."},
            status=400,
        )
    return render(request, "subscriptions/confirm.html", {"subscriber": subscriber})


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request, token):
    subscriber, error = _from_token(request, token, Subscriber.UNSUBSCRIBE)
    if error:
        return error
    if request.method == "POST":
        subscriber.unsubscribe()
    return render(
        request,
        "subscriptions/unsubscribe.html",
        {
            "subscriber": subscriber,
            "subscribed": subscriber.status
            in (Subscriber.Status.PENDING, Subscriber.Status.CONFIRMED),
            "preferences_url": subscriber.preferences_path(),
        },
    )


@csrf_exempt
@require_POST
def one_click(request, token):
    """RFC 8058: mail clients POST List-Unsubscribe=One-Click here, with no
    cookies and no CSRF token; the signed token is the proof."""
    try:
        subscriber = Subscriber.from_token(token, Subscriber.UNSUBSCRIBE)
    except BadToken as e:
        return HttpResponse(e.message, status=400, content_type="text/plain")
    if request.POST.get("List-Unsubscribe") != "One-Click":
        return HttpResponse(
            "Expected List-Unsubscribe=One-Click.", status=400, content_type="text/plain"
        )
    subscriber.unsubscribe()
    return HttpResponse("You are unsubscribed.", content_type="text/plain")


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def preferences(request, token):
    subscriber, error = _from_token(request, token, Subscriber.PREFERENCES)
    if error:
        return error
    saved = False
    status = 200
    if _finding(request):
        form = _unbound_copy(PreferencesForm, request.POST)
    elif request.method == "POST":
        form = PreferencesForm(request.POST)
        if form.is_valid():
            subscriber.update_preferences(**form.cleaned_data)
            saved = True
        else:
            status = 400
    else:
        form = PreferencesForm(
            initial={
                "name": subscriber.name,
                "frequency": subscriber.frequency,
                "topics": subscriber.topics(),
                "stats_opt_out": subscriber.stats_opt_out,
            }
        )
    return render(
        request,
        "subscriptions/preferences.html",
        {
            "subscriber": subscriber,
            "form": form,
            "saved": saved,
            "token": token,
            "subscribed": subscriber.status
            in (Subscriber.Status.PENDING, Subscriber.Status.CONFIRMED),
            "unsubscribe_url": subscriber.unsubscribe_path(),
            **_topics_context(request, form["topics"].value() or []),
        },
        status=status,
    )


@never_cache
@require_POST
def data_link(request, token):
    """From the preferences page: email the address a short-lived link to
    download or erase its data. At most RATELIMIT_EMAIL emails an address."""
    subscriber, error = _from_token(request, token, Subscriber.PREFERENCES)
    if error:
        return error
    if not _rate_limited(
        request,
        "subscriptions.data_link",
        lambda group, request: subscriber.key,
        conf.RATELIMIT_EMAIL,
    ):
        delivery.request_data_link(subscriber)
    return render(
        request,
        "subscriptions/data_link_sent.html",
        {"subscriber": subscriber, "preferences_url": subscriber.preferences_path()},
    )


@never_cache
@require_safe
def download_data(request, token):
    subscriber, error = _from_token(request, token, DATA)
    if error:
        return error
    response = JsonResponse(subscriber.export_data(), json_dumps_params={"indent": 2})
    response["Content-Disposition"] = 'attachment; filename="my-subscription.json"'
    return response


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def erase(request, token):
    """The page the emailed data link opens: download, or erase (POST)."""
    subscriber, error = _from_token(request, token, DATA)
    if error:
        return error
    if request.method == "POST":
        subscriber.erase()
        return render(request, "subscriptions/erased.html")
    return render(
        request,
        "subscriptions/erase.html",
        {
            "subscriber": subscriber,
            "token": token,
            "preferences_url": subscriber.preferences_path(),
        },
    )


# The public archive (mounted by the host site from urls.archive): what was
# emailed, and each email's web version, never with a reader's links.

ARCHIVE_PER_PAGE = 20


@require_safe
def archive(request):
    """Every post that was emailed, newest first (two queries a page)."""
    page = Paginator(Mailing.objects.archived(), ARCHIVE_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "subscriptions/archive.html", {"page": page})


@require_safe
def web_version(request, key):
    """The email of one mailing as readers got it, without any reader's
    links, at an address made of a random key (an email-only post has no
    other). Gone once the mailing is withdrawn (its post unpublished)."""
    mailing = get_object_or_404(Mailing.objects.archived().defer(None), web_key=key)
    response = render(
        request,
        "subscriptions/web_version.html",
        {"mailing": mailing, "email_html": emails.web_version(mailing)},
    )
    response["X-Robots-Tag"] = "noindex"
    return response


# Engagement stats (stats.py). Public and hit by every kind of machine:
# a bad or forged link gets a plain 404, the same whoever it names; a good
# one always gets its pixel or redirect, whether or not it is counted.

# The smallest transparent GIF.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)


def _untracked(response):
    response["Cache-Control"] = "no-store, private"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@csrf_exempt
@require_safe
def stats_open(request, mailing, message):
    try:
        stats.opened(request, mailing, message)
    except stats.BadLink:
        return _untracked(HttpResponseNotFound("Not found.", content_type="text/plain"))
    return _untracked(HttpResponse(PIXEL, content_type="image/gif"))


@csrf_exempt
@require_safe
def stats_click(request, link, message):
    try:
        url = stats.clicked(request, link, message)
    except stats.BadLink:
        return _untracked(
            HttpResponseNotFound(
                "This link is not valid. Please use the link in the email.",
                content_type="text/plain",
            )
        )
    return _untracked(HttpResponseRedirect(url))
