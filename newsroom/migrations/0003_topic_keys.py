"""Follows and mailing topics keep an entity's topic key ("entity:<pk>"),
which never changes, instead of its slug, which changed on every rename and
silently cut the entity's followers off. Slugs an entity had before a rename
(its redirects) are mapped too, so followers already cut off get back.

newsroom may use subscriptions' tables (never the reverse). Safe to run
twice: keys are not slugs (they hold a colon), so a second run finds nothing.
"""

from django.db import migrations


def _names(apps):
    """{slug or old slug: entity pk}."""
    Entity = apps.get_model("newsroom", "Entity")
    EntityRedirect = apps.get_model("newsroom", "EntityRedirect")
    names = dict(EntityRedirect.objects.values_list("old_slug", "entity_id"))
    names.update(Entity.objects.values_list("slug", "pk"))
    return names


def _rewrite(apps, mapping):
    """Replace each follow topic and mailing topic found in `mapping`."""
    Follow = apps.get_model("subscriptions", "Follow")
    Mailing = apps.get_model("subscriptions", "Mailing")
    by_target = {}
    for old, new in mapping.items():
        by_target.setdefault(new, []).append(old)
    for new, olds in by_target.items():
        follows = Follow.objects.filter(topic__in=olds)
        followers = set(follows.values_list("subscriber_id", flat=True))
        if not followers:
            continue
        # A reader may follow an entity under two of its slugs: one follow.
        follows.delete()
        Follow.objects.bulk_create(
            [Follow(subscriber_id=pk, topic=new) for pk in sorted(followers)],
            ignore_conflicts=True,
        )
    changed = []
    for mailing in Mailing.objects.only("topics").iterator():
        topics = sorted({mapping.get(t, t) for t in mailing.topics})
        if topics != sorted(mailing.topics):
            mailing.topics = topics
            changed.append(mailing)
    Mailing.objects.bulk_update(changed, ["topics"], batch_size=500)


def slugs_to_keys(apps, schema_editor):
    _rewrite(apps, {slug: f"entity:{pk}" for slug, pk in _names(apps).items()})


def keys_to_slugs(apps, schema_editor):
    Entity = apps.get_model("newsroom", "Entity")
    _rewrite(apps, {f"entity:{pk}": slug for pk, slug in Entity.objects.values_list("pk", "slug")})


class Migration(migrations.Migration):
    dependencies = [
        ("newsroom", "0002_roles"),
        ("subscriptions", "0002_delivery"),
    ]

    operations = [migrations.RunPython(slugs_to_keys, keys_to_slugs)]
