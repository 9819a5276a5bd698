"""A reader subscribes from the footer of the reference article, and from an
entity page, in headless Chromium; the confirmation goes through a real
Celery worker and SMTP server."""

import re
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command

from newsroom.models import Article, Entity
from subscriptions.models import Subscriber

pytestmark = pytest.mark.usefixtures("celery_worker")


@pytest.fixture
def reference_article():
    call_command("load_seeds", "--no-email", stdout=open("/dev/null", "w"))
    return Article.objects.get(title__startswith="Report says Sessions")


def confirmation_path(message):
    text = message.get_body(("plain",)).get_content()
    url = re.search(rf"{re.escape(settings.SITE_URL)}/subscribe/confirm/\S+/", text).group(0)
    return urlsplit(url).path


def subscribe_and_confirm(page, live_server, smtp_server, celery_worker, form, address):
    form.locator("input[type=email]").fill(address)
    form.locator("button[type=submit]").click()
    page.wait_for_selector("text=Check your inbox")

    [confirmation] = smtp_server.wait_for(1)
    celery_worker.drain()
    assert [m["To"] for m in smtp_server.messages] == [address]
    assert Subscriber.objects.get(email=address).status == Subscriber.Status.PENDING

    page.goto(live_server.url + confirmation_path(confirmation))
    assert Subscriber.objects.get(email=address).status == Subscriber.Status.PENDING
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_selector("text=Welcome to")
    return Subscriber.objects.get(email=address)


def test_a_reader_subscribes_from_the_article_footer(
    live_server, page, smtp_server, celery_worker, reference_article, screenshot
):
    page.goto(live_server.url + reference_article.get_absolute_url())
    footer = page.locator("section.subscribe")
    assert footer.locator("h2").inner_text() == f"Discover more from {settings.SITE_NAME}"
    screenshot(page, "subscribe-footer")

    subscriber = subscribe_and_confirm(
        page, live_server, smtp_server, celery_worker, footer.locator("form"), "ann@example.com"
    )
    screenshot(page, "subscribe-welcome")
    assert subscriber.status == Subscriber.Status.CONFIRMED
    assert subscriber.follows_everything
    assert subscriber.consent_page == settings.SITE_URL + reference_article.get_absolute_url()
    assert subscriber.consent_wording == (
        f"Discover more from {settings.SITE_NAME}. "
        "Subscribe to get the latest posts sent to your email."
    )
    assert subscriber.consent_user_agent  # The browser's.


def test_a_reader_follows_an_entity_from_its_page(
    live_server, page, smtp_server, celery_worker, reference_article
):
    entity = Entity.objects.get(name="El Paso")
    page.goto(live_server.url + entity.get_absolute_url())
    form = page.locator("section.subscribe", has_text="Follow El Paso by email").locator("form")

    subscriber = subscribe_and_confirm(
        page, live_server, smtp_server, celery_worker, form, "bob@example.com"
    )
    assert subscriber.status == Subscriber.Status.CONFIRMED
    assert subscriber.topics() == [entity.topic_key]
    assert not subscriber.follows_everything
    assert subscriber.consent_page == settings.SITE_URL + entity.get_absolute_url()
    assert subscriber.consent_wording.startswith("Follow El Paso by email.")
