"""Engagement stats: what a post email's tracking pixel and links record, and
how a machine's fetch is told from a person's.

Off unless SUBSCRIPTIONS_STATS is set. Then each reader's copy of a post
email (never the stored snapshot, the web version or an editor's test) gets
a 1×1 pixel and its links go through /subscribe/c/…, which redirects to the
link's address. Both carry two signed tokens: the mailing's (and, for a
link, its place in the mailing's stored list of addresses: a link can lead
only to an address that was in that mailing), and the message's (when it
was sent and, in per-reader mode, the reader's random key; in aggregate mode
no reader at all).

What is stored: hourly counters per mailing, link and kind (StatCount, no
reader); in per-reader mode (SUBSCRIPTIONS_STATS_PER_READER) also one
StatEvent row per open or click with the reader, unless they opted out.

A fetch is a machine's when it is a HEAD request, has no user agent or a
known bot's, scanner's or link previewer's (crawler-user-agents' list and
data/machine-agents.txt), comes within STATS_MACHINE_SECONDS of sending,
or is one of a burst of clicks on many links of one message. Apple Mail
Privacy Protection's fetches are counted apart (data/apple-mpp.txt says
how they are recognised, and what cannot be).
"""

import hashlib
import html
import ipaddress
import re
import time
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path

from crawleruseragents import is_crawler
from django.core import signing
from django.core.cache import caches
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Sum
from django.urls import reverse
from django.utils import timezone
from django_ratelimit.core import _get_ip, is_ratelimited

from . import emails, ratelimits
from .conf import conf
from .models import Delivery, Mailing, StatCount, StatEvent, StatKind, Subscriber

DATA = Path(__file__).parent / "data"
LINK_SALT = "subscriptions.stats.link"
OPEN_SALT = "subscriptions.stats.open"
MESSAGE_SALT = "subscriptions.stats.message"
MAX_LINKS = 200  # A mailing's links beyond these are left as they are.


class BadLink(Exception):
    """A pixel or link whose signature does not hold, or that names no
    address of its mailing."""


# Links. The snapshot's addresses are listed once (Mailing.links, at
# announce); a reader's copy names each by its place in that list.

_HREF = re.compile(r'(<a\b[^>]*?\bhref=")([^"]*)(")', re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>\"')\]]+")


def _trackable(url):
    # Placeholders are the reader's own links (unsubscribe, preferences).
    return url.startswith(("http://", "https://")) and emails._MARK not in url


def links_in(html_part, text_part=""):
    """The distinct http(s) addresses the HTML part links to (and the plain
    text part names), in order; the reader's own links (placeholders) are
    never among them."""
    found = [html.unescape(m.group(2)) for m in _HREF.finditer(html_part)]
    found += _TEXT_URL.findall(text_part)
    return list(dict.fromkeys(url for url in found if _trackable(url)))[:MAX_LINKS]


def _sign(salt, value):
    return signing.Signer(salt=salt).sign(value)


def _unsign(salt, token):
    try:
        return signing.Signer(salt=salt).unsign(token)
    except signing.BadSignature:
        raise BadLink from None


def link_token(mailing_id, index):
    return _sign(LINK_SALT, f"{mailing_id}.{index}")


def open_token(mailing_id):
    return _sign(OPEN_SALT, str(mailing_id))


def message_token(key, sent):
    """Who got the message (a reader's random key, or "" in aggregate mode)
    and when it was sent (whole seconds)."""
    return _sign(MESSAGE_SALT, f"{key}.{int(sent)}")


def load_link(token):
    """(mailing id, index) of a link token; raises BadLink."""
    mailing, _, index = _unsign(LINK_SALT, token).partition(".")
    return int(mailing), int(index)


def load_open(token):
    return int(_unsign(OPEN_SALT, token))


def load_message(token):
    """(reader key or None, sent time in seconds) of a message token."""
    key, _, sent = _unsign(MESSAGE_SALT, token).rpartition(".")
    return key or None, int(sent)


MESSAGE = "STATS"  # The placeholder of the message token.


def _click_url(mailing_id, index):
    path = reverse("subscriptions:stats_click", args=[link_token(mailing_id, index), "MSG"])
    return conf.absolute_url(path.replace("MSG", emails.placeholder(MESSAGE)))


def tracked(mailing):
    """(text, html) of the mailing's snapshot as a reader's copy: its listed
    links through the click redirect, a pixel at the end of the HTML, and
    the placeholder of the message token in each (reader_values fills it)."""
    index = {url: i for i, url in enumerate(mailing.links)}
    urls = {}

    def through(url):
        if url not in urls:
            urls[url] = _click_url(mailing.pk, index[url]) if url in index else None
        return urls[url]

    def href(match):
        new = through(html.unescape(match.group(2)))
        return match.group(1) + html.escape(new) + match.group(3) if new else match.group(0)

    def text_url(match):
        return through(match.group(0)) or match.group(0)

    path = reverse("subscriptions:stats_open", args=[open_token(mailing.pk), "MSG"])
    pixel = conf.absolute_url(path.replace("MSG", emails.placeholder(MESSAGE)))
    tag = (
        f'<img src="{html.escape(pixel)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0">'
    )
    body = _HREF.sub(href, mailing.html)
    body = body.replace("</body>", tag + "</body>") if "</body>" in body else body + tag
    return _TEXT_URL.sub(text_url, mailing.text), body


def reader_values(subscriber):
    """The message token of one reader's copy: with their key only in
    per-reader mode and when they have not opted out."""
    individual = (
        conf.STATS_PER_READER
        and subscriber is not None
        and not getattr(subscriber, "stats_opt_out", True)
    )
    return {MESSAGE: message_token(subscriber.key if individual else "", time.time())}


# Telling machines from people.


def _patterns(name):
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@cache
def _machine_agents():
    """Our own list (data/machine-agents.txt), as one regular expression."""
    return re.compile("|".join(f"(?:{p})" for p in _patterns("machine-agents.txt")), re.IGNORECASE)


@lru_cache(maxsize=4096)
def _known_machine(user_agent):
    # The package's 1,500 patterns cost milliseconds per user agent; the
    # user agents of a mailing's clicks are few and repeat, so each is
    # looked up once per process.
    return is_crawler(user_agent) or bool(_machine_agents().search(user_agent))


@cache
def _mail_proxies():
    return re.compile("|".join(f"(?:{p})" for p in _patterns("mail-proxies.txt")), re.IGNORECASE)


@cache
def _apple_networks():
    return [ipaddress.ip_network(line) for line in _patterns("apple-mpp.txt")]


def is_machine_agent(user_agent):
    user_agent = (user_agent or "").strip()[:512]
    return not user_agent or _known_machine(user_agent)


def is_apple_mpp(user_agent, ip):
    if (user_agent or "").strip() == "Mozilla/5.0":
        return True
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return False
    return any(address in network for network in _apple_networks())


def _client_ip(request):
    try:
        return _get_ip(request)
    except Exception:  # No usable address (misconfigured proxy): not an Apple one.
        return ""


def classify_open(request, sent, now):
    agent = request.headers.get("User-Agent", "")
    if request.method == "HEAD":
        return StatKind.OPEN_MACHINE
    if is_apple_mpp(agent, _client_ip(request)):
        return StatKind.OPEN_MPP
    if agent and _mail_proxies().search(agent):
        return StatKind.OPEN
    if is_machine_agent(agent) or now - sent < conf.STATS_MACHINE_SECONDS:
        return StatKind.OPEN_MACHINE
    return StatKind.OPEN


def classify_click(request, sent, now):
    agent = request.headers.get("User-Agent", "")
    if request.method == "HEAD" or is_machine_agent(agent) or _mail_proxies().search(agent):
        return StatKind.CLICK_MACHINE
    if now - sent < conf.STATS_MACHINE_SECONDS:
        return StatKind.CLICK_MACHINE
    return StatKind.CLICK


# Recording. Each request is a signature check, at most one read (the
# mailing's links, for a click) and one write (two in per-reader mode);
# a burst of clicks is kept for a few seconds in the shared cache.


def _counted(request):
    """Whether this request may be recorded: stats on, and the client IP
    under STATS_RATELIMIT (a flood still gets its pixels and redirects)."""
    if not conf.STATS:
        return False
    rate = conf.STATS_RATELIMIT
    if not rate:
        return True
    try:
        return not is_ratelimited(
            request,
            group="subscriptions.stats",
            key=lambda group, request: ratelimits.client_ip(request),
            rate=rate,
            increment=True,
        )
    except Exception:  # The cache is down: count, as the page would still work.
        return True


def _reader_id(key):
    """The id of the reader a per-reader token names, if per-reader stats
    are on and they have not opted out since."""
    if not key or not conf.STATS_PER_READER:
        return None
    return (
        Subscriber.objects.filter(key=key, stats_opt_out=False).values_list("pk", flat=True).first()
    )


def _record(mailing_id, kind, link, reader_id, at):
    with transaction.atomic():
        StatCount.objects.add(mailing_id, kind, link, at)
        if reader_id:
            return StatEvent.objects.create(
                mailing_id=mailing_id, subscriber_id=reader_id, kind=kind, link=link, at=at
            ).pk
    return None


def opened(request, mailing_token, message):
    """Record an open of the pixel; raises BadLink for a forged one."""
    mailing_id = load_open(mailing_token)
    key, sent = load_message(message)
    if not _counted(request):
        return
    now = timezone.now()
    kind = classify_open(request, sent, now.timestamp())
    if not Mailing.objects.filter(pk=mailing_id).exists():
        return  # Deleted since: nothing to count it on.
    _record(mailing_id, kind, -1, _reader_id(key), now)


def clicked(request, link, message):
    """The address a click link leads to, after recording the click; raises
    BadLink for a forged link or one naming no address of its mailing."""
    mailing_id, index = load_link(link)
    key, sent = load_message(message)
    links = Mailing.objects.filter(pk=mailing_id).values_list("links", flat=True).first()
    if not links or not 0 <= index < len(links):
        raise BadLink
    url = links[index]
    if not _trackable(url):
        raise BadLink
    if _counted(request):
        now = timezone.now()
        kind = classify_click(request, sent, now.timestamp())
        event = _record(mailing_id, kind, index, _reader_id(key), now)
        _burst(request, message, mailing_id, index, kind, event, now, len(links))
    return url


def _burst(request, message, mailing_id, index, kind, event, now, link_count):
    """A message whose links are clicked many at once (STATS_BURST_LINKS
    different ones, or all of them, within STATS_BURST_SECONDS) is a
    machine's: this click, and those of the burst already counted as a
    person's, are counted as a machine's. Kept in the shared cache for the
    burst's few seconds, under a hash of the message token, the client's
    IP and user agent (an aggregate token names no reader)."""
    seconds = conf.STATS_BURST_SECONDS
    digest = hashlib.sha256(
        f"{message}|{_client_ip(request)}|{request.headers.get('User-Agent', '')}".encode()
    ).hexdigest()[:32]
    cache_key = f"subscriptions:stats:burst:{digest}"
    try:
        cache = caches[conf.CACHE]
        clicks = [c for c in cache.get(cache_key, []) if now.timestamp() - c[3] <= seconds]
        clicks.append([index, kind, event, now.timestamp()])
        cache.set(cache_key, clicks, timeout=max(1, int(seconds) + 1))
    except Exception:  # Without the cache, bursts are not looked for.
        return
    distinct = {c[0] for c in clicks}
    needed = min(conf.STATS_BURST_LINKS, link_count)
    if link_count < 2 or len(distinct) < needed:
        return
    for c in clicks:
        if c[1] == StatKind.CLICK:
            at = datetime.fromtimestamp(c[3], tz=UTC)
            StatCount.objects.move(mailing_id, c[0], at, StatKind.CLICK, StatKind.CLICK_MACHINE)
            if c[2]:
                StatEvent.objects.filter(pk=c[2]).update(kind=StatKind.CLICK_MACHINE)
            c[1] = StatKind.CLICK_MACHINE
    try:
        cache.set(cache_key, clicks, timeout=max(1, int(seconds) + 1))
    except Exception:
        pass


# What the admin shows.

HOURS = 48


def unsubscribes(mailings):
    """{mailing id: readers who left after being sent it and before being
    sent any other post}, in one query. From the delivery ledger, so it
    needs no tracking (and counts with stats off too)."""
    later = Delivery.objects.filter(
        subscriber=OuterRef("subscriber"),
        status=Delivery.Status.SENT,
        sent_at__gt=OuterRef("sent_at"),
        sent_at__lte=OuterRef("subscriber__unsubscribed_at"),
    )
    rows = (
        Delivery.objects.filter(
            mailing__in=mailings,
            status=Delivery.Status.SENT,
            subscriber__status=Subscriber.Status.UNSUBSCRIBED,
            subscriber__unsubscribed_at__gte=F("sent_at"),
        )
        .exclude(Exists(later))
        .values_list("mailing")
        .annotate(n=Count("pk"))
    )
    return dict(rows)


def summaries(mailings):
    """{mailing id: {delivered, open, open-machine, open-mpp, click,
    click-machine, unsubscribed, readers-open, readers-click}} for these
    mailings, in four queries whatever their number."""
    ids = [m.pk for m in mailings]
    delivered = dict(
        Delivery.objects.filter(mailing__in=ids, status=Delivery.Status.SENT)
        .values_list("mailing")
        .annotate(n=Count("pk"))
    )
    totals = StatCount.objects.totals(ids)
    left = unsubscribes(ids)
    readers = {}
    for mailing, kind, n in (
        StatEvent.objects.filter(mailing__in=ids, kind__in=[StatKind.OPEN, StatKind.CLICK])
        .values_list("mailing", "kind")
        .annotate(n=Count("subscriber", distinct=True))
    ):
        readers.setdefault(mailing, {})[f"readers-{kind}"] = n
    out = {}
    for pk in ids:
        row = {kind.value: totals.get(pk, {}).get(kind.value, 0) for kind in StatKind}
        row.update(delivered=delivered.get(pk, 0), unsubscribed=left.get(pk, 0))
        row.update({"readers-open": 0, "readers-click": 0, **readers.get(pk, {})})
        out[pk] = row
    return out


def top_links(mailing, limit=10):
    """[(address, people's clicks, machines' clicks)], most clicked by
    people first, in one query."""
    rows = (
        StatCount.objects.filter(mailing=mailing, link__gte=0)
        .values("link")
        .annotate(
            human=Sum("count", filter=Q(kind=StatKind.CLICK)),
            machine=Sum("count", filter=Q(kind=StatKind.CLICK_MACHINE)),
        )
        .order_by("-human", "-machine", "link")[:limit]
    )
    links = mailing.links
    return [
        (links[r["link"]] if r["link"] < len(links) else "?", r["human"] or 0, r["machine"] or 0)
        for r in rows
    ]


def first_hours(mailing, start):
    """{kind: [count per hour]} for the HOURS hours from `start` (the hour
    the mailing began), in one query."""
    start = start.replace(minute=0, second=0, microsecond=0)
    series = {kind.value: [0] * HOURS for kind in StatKind}
    rows = (
        StatCount.objects.filter(
            mailing=mailing, hour__gte=start, hour__lt=start + timedelta(hours=HOURS)
        )
        .values_list("hour", "kind")
        .annotate(n=Sum("count"))
    )
    for hour, kind, n in rows:
        series[kind][int((hour - start).total_seconds() // 3600)] += n
    return series


def subscriber_growth(days=90, today=None):
    """(dates, {series: [count on each date]}) for the last `days` days:
    readers confirmed then (and still, or not yet gone), and how many had
    unsubscribed and been suppressed by then. Built from each reader's
    current state and its times (a reader who left and came back counts
    from their latest confirmation; suppressions from before suppressed_at
    was recorded are left out). Three queries."""
    from django.db.models.functions import TruncDate

    today = today or timezone.localdate()
    first = today - timedelta(days=days - 1)
    dates = [first + timedelta(days=i) for i in range(days)]
    S = Subscriber.Status

    def per_day(field, **filters):
        """For everyone and for those once confirmed: (before the first
        date, {date: count}) each."""
        rows = (
            Subscriber.objects.filter(**{f"{field}__isnull": False}, **filters)
            .annotate(day=TruncDate(field))
            .values_list("day")
            .annotate(
                n=Count("pk"), once_confirmed=Count("pk", filter=Q(confirmed_at__isnull=False))
            )
        )
        out = ([0, {}], [0, {}])
        for day, *counts in rows:
            for before_and_days, n in zip(out, counts, strict=True):
                if day < first:
                    before_and_days[0] += n
                else:
                    before_and_days[1][day] = before_and_days[1].get(day, 0) + n
        return out

    def cumulative(counts):
        total, by_day = counts
        out = []
        for day in dates:
            total += by_day.get(day, 0)
            out.append(total)
        return out

    joined = cumulative(per_day("confirmed_at")[0])
    left = cumulative(per_day("unsubscribed_at", status=S.UNSUBSCRIBED)[1])
    suppressed_all, suppressed_confirmed = per_day("suppressed_at", status=S.SUPPRESSED)
    suppressed, gone_suppressed = cumulative(suppressed_all), cumulative(suppressed_confirmed)
    confirmed = [j - u - g for j, u, g in zip(joined, left, gone_suppressed, strict=True)]
    return dates, {"confirmed": confirmed, "unsubscribed": left, "suppressed": suppressed}


# Charts: SVG drawn on the server (templates/subscriptions/stats/chart.html).

COLOURS = {
    StatKind.OPEN: "#1f6f8b",
    StatKind.CLICK: "#c0392b",
    StatKind.OPEN_MPP: "#8e8e93",
    "machine": "#d4a017",
    "confirmed": "#2e7d32",
    "unsubscribed": "#c0392b",
    "suppressed": "#6d4c41",
}


def _nice_max(value):
    """The smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^n at or above
    `value` (at least 4): a chart's top with little empty room."""
    value = max(value, 4)
    step = 10 ** (len(str(int(value))) - 1)
    for factor in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if factor * step >= value:
            return int(factor * step) if factor * step == int(factor * step) else factor * step
    return 10 * step


def line_chart(title, labels, series, tick_every, width=760, height=240):
    """The geometry of a line chart: `series` is [(name, colour, values)],
    one value per label; a tick under every `tick_every`th label."""
    left, right, top, bottom = 48, 12, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_max(max((v for _, _, values in series for v in values), default=0))
    n = max(len(labels) - 1, 1)

    def x(i):
        return round(left + plot_w * i / n, 1)

    def y(v):
        return round(top + plot_h * (1 - v / top_value), 1)

    lines = [
        {
            "name": name,
            "colour": colour,
            "points": " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(values)),
            "total": values[-1]
            if name in ("confirmed", "unsubscribed", "suppressed")
            else sum(values),
        }
        for name, colour, values in series
    ]
    grid = [
        {"y": y(top_value * f), "label": _number(top_value * f)} for f in (0, 0.25, 0.5, 0.75, 1)
    ]
    ticks = [{"x": x(i), "label": label} for i, label in enumerate(labels) if i % tick_every == 0]
    return {
        "title": title,
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "bottom": top + plot_h,
        "lines": lines,
        "grid": grid,
        "ticks": ticks,
        "summary": "; ".join(f"{line['name']}: {line['total']}" for line in lines),
    }


def _number(value):
    return str(int(value)) if value == int(value) else f"{value:g}"


def mailing_chart(mailing, start):
    """The first HOURS hours of a mailing: people's opens and clicks,
    machines' opens and clicks together, and Apple's MPP fetches."""
    hours = first_hours(mailing, start)
    machine = [
        a + b
        for a, b in zip(hours[StatKind.OPEN_MACHINE], hours[StatKind.CLICK_MACHINE], strict=True)
    ]
    return line_chart(
        f"The first {HOURS} hours, per hour",
        [f"{h}h" for h in range(HOURS)],
        [
            ("people's opens", COLOURS[StatKind.OPEN], hours[StatKind.OPEN]),
            ("people's clicks", COLOURS[StatKind.CLICK], hours[StatKind.CLICK]),
            ("Apple MPP fetches", COLOURS[StatKind.OPEN_MPP], hours[StatKind.OPEN_MPP]),
            ("machines' opens and clicks", COLOURS["machine"], machine),
        ],
        tick_every=6,
    )


def growth_chart(days=90):
    dates, series = subscriber_growth(days)
    return line_chart(
        f"Subscribers over the last {days} days",
        [f"{d:%-d %b}" for d in dates],
        [(name, COLOURS[name], values) for name, values in series.items()],
        tick_every=15,
    )
