"""Redis commands of our own beside a cache's, where the cache is
django-redis's: a Lua script does in one round trip what the cache API
would do in many."""

try:
    from django_redis.client import DefaultClient
except ImportError:  # the cache may be another one
    DefaultClient = None


def client(cache):
    """The redis-py client behind `cache` when it is django-redis's plain
    client (one server, so scripts can run on it); None for any other."""
    cache_client = getattr(cache, "client", None)
    if DefaultClient is None or type(cache_client) is not DefaultClient:
        return None
    return cache_client.get_client(write=True)


_scripts = {}


def script(redis, source):
    """The Lua script `source` on the redis-py client `redis`, registered
    once per client."""
    key = (id(redis), source)
    registered = _scripts.get(key)
    if registered is None or registered.registered_client is not redis:
        registered = _scripts[key] = redis.register_script(source)
    return registered
