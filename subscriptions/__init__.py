"""A pluggable newsletter app: subscribers, mailings and deliveries.

It never imports the site that installs it; see README.md ("Subscriptions")
and docs/architecture.md.
"""


def announce(post, live_since=None):
    """Email `post` to the subscribers who want it, once.

    Call it after the post is committed as published. Idempotent: however
    often a post is announced (a double click, republishing, two beat ticks,
    retries), it gets one Mailing, and each reader at most one message.
    The readers are those confirmed when it went live: now, or `live_since`
    when it is announced late. Returns the Mailing. See README.md for what
    it reads of a post.
    """
    from .delivery import announce

    return announce(post, live_since)[0]


def mailing_for(post):
    """The Mailing of `post` with its progress counts (sent_count,
    failed_count, pending_count, digest_count, skipped_count), or None if it
    was never announced."""
    from .models import Mailing

    return Mailing.objects.with_progress().filter(post_key=Mailing.key_for(post)).first()


def unannounced(posts):
    """Of `posts`, those never announced (they have no Mailing), in one
    query: for a host site's sweeper, when the announce after a publication
    was lost (the process died between the commit and the call)."""
    from .models import Mailing

    by_key = {Mailing.key_for(post): post for post in posts}
    announced = set(
        Mailing.objects.filter(post_key__in=list(by_key)).values_list("post_key", flat=True)
    )
    return [post for key, post in by_key.items() if key not in announced]


def preview(post):
    """The email `post` would send if announced now, as a sample reader
    would get it (its links lead to the site, not to anyone's preferences):
    an object with subject, text and html. Renders only: stores and sends
    nothing, so an editor can look before publishing."""
    from .emails import preview

    return preview(post)


def withdraw(post):
    """Stop mailing `post` (it was unpublished): its mailing is paused and no
    digest will list it. An editor can resume the mailing from the admin."""
    from .delivery import withdraw

    return withdraw(post)
