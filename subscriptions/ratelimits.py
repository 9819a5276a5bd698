"""Several django-ratelimit limits counted in one Redis round trip.

The subscribe POST counts two limits, per IP and per address: through
django-ratelimit that is two to four cache commands, each a round trip. Here
they are one Lua script on the same counters — the same keys, windows and
counts as django-ratelimit's (its settings RATELIMIT_ENABLE,
RATELIMIT_USE_CACHE, RATELIMIT_IP_META_KEY and the IP masks hold) — when the
cache is django-redis's plain client; with any other cache, one
is_ratelimited() call per limit, as before.
"""

import ipaddress

from django.conf import settings
from django.core.cache import caches
from django.utils.module_loading import import_string
from django_ratelimit import ALL
from django_ratelimit.core import (
    _get_ip,
    _get_window,
    _make_cache_key,
    _split_rate,
    is_ratelimited,
)

from . import rediscache

# As django-ratelimit keeps a counter: a little longer than its window.
EXPIRATION_FUDGE = 5

# KEYS[i]: a counter; ARGV[2i - 1]: its limit, ARGV[2i]: its lifetime in
# seconds. Counts each in turn and stops at the first over its limit (the
# ones after it are not counted, as when they were asked one by one);
# returns its index, or 0.
_COUNT = """
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, ARGV[2 * i]) end
  if count > tonumber(ARGV[2 * i - 1]) then return i end
end
return 0
"""


# The per-IP key of every request whose forwarded IP is not an address.
NO_IP = "no-ip"


def client_ip(request):
    """The client's IP as django-ratelimit's "ip" key sees it (masked to
    RATELIMIT_IPV6_MASK, a /64). A forwarded IP that is no address (the
    header RATELIMIT_IP_META_KEY names, sent by whoever reaches the site
    without its proxy) is not a 500: every such request shares NO_IP, so
    changing the garbage escapes no limit."""
    try:
        return _get_ip(request)
    except ValueError:
        return NO_IP


def consent_ip(request):
    """The client's whole IP, for the consent record: read where the rate
    limits read it (REMOTE_ADDR, or behind a proxy RATELIMIT_IP_META_KEY),
    not masked; None when that is no address."""
    source = getattr(settings, "RATELIMIT_IP_META_KEY", None) or "REMOTE_ADDR"
    try:
        if callable(source):
            ip = source(request)
        elif "." in source:
            ip = import_string(source)(request)
        else:
            ip = request.META.get(source, "")
        address = ipaddress.ip_address(ip.strip())
    except (TypeError, ValueError, AttributeError, ImportError):
        return None
    # A zone ("fe80::1%eth0") names an interface of the sender's machine,
    # and PostgreSQL's inet refuses it.
    return None if getattr(address, "scope_id", None) else str(address)


def first_over(request, limits):
    """Count this request against each of `limits` ([(group, value, rate)],
    in order; a rate of None is no limit), stopping at the first it is over;
    returns that one's index, or None."""
    limits = [(i, group, value, rate) for i, (group, value, rate) in enumerate(limits) if rate]
    if not limits or not getattr(settings, "RATELIMIT_ENABLE", True):
        return None
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    redis = rediscache.client(cache)
    if redis is None:
        for i, group, value, rate in limits:
            if is_ratelimited(
                request, group=group, key=lambda g, r, v=value: v, rate=rate, increment=True
            ):
                return i
        return None
    keys, args = [], []
    for _, group, value, rate in limits:
        limit, period = _split_rate(rate)
        window = _get_window(value, period)
        keys.append(cache.make_key(_make_cache_key(group, window, rate, value, ALL)))
        args += [limit, period + EXPIRATION_FUDGE]
    over = rediscache.script(redis, _COUNT)(keys=keys, args=args)
    return limits[over - 1][0] if over else None
