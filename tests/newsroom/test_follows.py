"""Following an entity by email survives renaming it: follows keep the
entity's topic key, which never changes, while its slug does."""

import importlib
import io
import re
from collections import Counter

import pytest
from django.apps import apps
from django.core.management import call_command

from newsroom.models import Entity
from subscriptions import delivery
from subscriptions.models import MAX_ID, Delivery, Follow, Mailing, Subscriber
from tests.factories import make_article, make_entity, make_subscriber

pytestmark = pytest.mark.django_db


def follow_from_the_entity_page(client, entity, email):
    """Subscribe with the form on the entity's page, and confirm."""
    html = client.get(entity.get_absolute_url()).content.decode()
    form = re.search(
        r'<form[^>]*>(?:(?!</form>).)*name="topics"(?:(?!</form>).)*</form>', html, re.S
    )
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(0)))
    fields["email"] = email
    assert client.post("/subscribe/", fields).status_code == 200
    subscriber = Subscriber.objects.get(email=email)
    assert subscriber.confirm()
    return subscriber


def mail(article, smtp_server, django_capture_on_commit_callbacks):
    """Announce, fan out and send in this process; returns what the SMTP
    server received, by recipient."""
    smtp_server.clear()
    with django_capture_on_commit_callbacks(execute=False):
        mailing, created = delivery.announce(article)
        assert created
        delivery.fan_out(mailing.pk)
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    return mailing, Counter(r for m in smtp_server.messages for r in m.envelope_recipients)


def test_a_follower_still_gets_posts_after_a_rename_and_a_change_of_kind(
    client, smtp_server, django_capture_on_commit_callbacks
):
    el_paso = make_entity("El Paso", kind=Entity.Kind.PLACE)
    other = make_entity("Jeff Sessions")
    follower = follow_from_the_entity_page(client, el_paso, "follower@example.com")
    follow_from_the_entity_page(client, other, "someone-else@example.com")

    el_paso.name = "El Paso, Texas"
    el_paso.save()
    assert el_paso.slug == "el-paso-texas"
    article = make_article("Border report", entities=[el_paso])
    mailing, received = mail(article, smtp_server, django_capture_on_commit_callbacks)
    assert received == {follower.email: 1}
    assert Delivery.objects.filter(mailing=mailing, subscriber=follower).count() == 1

    el_paso.kind = Entity.Kind.TOPIC
    el_paso.save()
    article = make_article("Second report", entities=[el_paso])
    _, received = mail(article, smtp_server, django_capture_on_commit_callbacks)
    assert received == {follower.email: 1}


def test_csv_files_name_entities_by_their_slug_at_the_time(tmp_path):
    el_paso = make_entity("El Paso", kind=Entity.Kind.PLACE)
    sessions = make_entity("Jeff Sessions")
    source = tmp_path / "in.csv"
    source.write_text(
        "email,name,frequency,topics\n"
        "ann@example.com,Ann,daily,el-paso jeff-sessions\n"
        f"bob@example.com,Bob,instant,{sessions.topic_key}\n"
        "eve@example.com,Eve,instant,no-such-entity\n"
    )
    call_command("import_subscribers", str(source), "--confirmed", stderr=io.StringIO())
    ann = Subscriber.objects.get(email="ann@example.com")
    assert ann.topics() == sorted([el_paso.topic_key, sessions.topic_key])
    assert Subscriber.objects.get(email="bob@example.com").topics() == [sessions.topic_key]
    assert not Subscriber.objects.filter(email="eve@example.com").exists()

    el_paso.name = "El Paso, Texas"
    el_paso.save()
    out = io.StringIO()
    call_command("export_subscribers", stdout=out)
    assert "ann@example.com,Ann,daily,el-paso-texas jeff-sessions" in out.getvalue()
    assert "bob@example.com,Bob,instant,jeff-sessions" in out.getvalue()


def test_the_migration_moves_follows_and_mailings_from_slugs_to_keys():
    migration = importlib.import_module("newsroom.migrations.0003_topic_keys")
    el_paso = make_entity("El Paso", kind=Entity.Kind.PLACE)
    el_paso.name = "El Paso, Texas"
    el_paso.save()  # "el-paso" is now an old slug (a redirect).
    sessions = make_entity("Jeff Sessions")
    # As stored before: by slug, the old one included, and both for one reader.
    both = make_subscriber("both@example.com", topics=["el-paso", "el-paso-texas"])
    old = make_subscriber("old@example.com", topics=["el-paso"])
    other = make_subscriber("other@example.com", topics=["jeff-sessions", "gone-entity"])
    mailing = Mailing.objects.create(
        post_key="newsroom.article:1", title="T", url="http://x/", topics=["el-paso-texas"]
    )

    migration.slugs_to_keys(apps, None)
    migration.slugs_to_keys(apps, None)  # A second run changes nothing.

    assert both.topics() == [el_paso.topic_key]
    assert old.topics() == [el_paso.topic_key]
    assert other.topics() == sorted(["gone-entity", sessions.topic_key])
    mailing.refresh_from_db()
    assert mailing.topics == [el_paso.topic_key]
    assert Follow.objects.count() == 4

    migration.keys_to_slugs(apps, None)
    assert both.topics() == ["el-paso-texas"]
    assert other.topics() == ["gone-entity", "jeff-sessions"]


def test_the_admin_shows_followed_entities_by_name(admin_client):
    el_paso = make_entity("El Paso", kind=Entity.Kind.PLACE)
    reader = make_subscriber("reader@example.com", topics=[el_paso.topic_key])
    Mailing.objects.create(
        post_key="newsroom.article:1", title="T", url="http://x/", topics=[el_paso.topic_key]
    )
    pages = [
        "/admin/subscriptions/subscriber/",
        f"/admin/subscriptions/subscriber/{reader.pk}/change/",
        f"/admin/subscriptions/mailing/{Mailing.objects.get().pk}/change/",
    ]
    for page in pages:
        html = admin_client.get(page).content.decode()
        assert "El Paso" in html, page
        assert el_paso.topic_key not in html.replace(f'value="{el_paso.topic_key}"', ""), page
