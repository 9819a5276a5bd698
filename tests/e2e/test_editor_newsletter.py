"""An editor takes back a send inside the undo window, and corrects a post
that has gone out; screenshots in test-artifacts/ for a person to look at."""

import re

import pytest
from playwright.sync_api import expect

from newsroom.models import Article
from subscriptions.models import Correction, CorrectionDelivery, Mailing
from tests.factories import make_article, make_staff, make_subscriber
from tests.subscriptions.test_delivery import received, wait_for_done
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery"


def _log_in(page, live_server, next_path):
    make_staff("editor", role="Editors", password=PASSWORD)
    page.goto(f"{live_server.url}/admin/login/?next={next_path}")
    page.fill("#id_username", "editor")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


def test_an_editor_cancels_a_send_inside_the_undo_window(
    live_server, page, screenshot, settings, celery_worker, smtp_server
):
    settings.SUBSCRIPTIONS_SEND_DELAY = 600
    make_subscriber("reader@example.com")
    _log_in(page, live_server, "/admin/newsroom/article/add/")
    page.fill("#id_title", "A story sent too soon")
    body = page.frame_locator("iframe.cke_wysiwyg_frame").locator("body")
    body.click()
    page.keyboard.type("It is not finished.")
    page.select_option("#id_status", "published")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")

    state = page.locator(".field-mailing_progress .send-state")
    expect(state).to_contain_text(re.compile(r"sending in (10:00|9:\d\d) — Cancel"))
    first = state.locator("time").inner_text()
    # The countdown runs in the page.
    wait_until(lambda: state.locator("time").inner_text() != first, timeout=10)
    screenshot(page, "editor-undo-window")
    article_url = page.url
    page.goto(f"{live_server.url}/admin/subscriptions/mailing/")
    expect(page.locator("#result_list .send-state")).to_contain_text("— Cancel")
    screenshot(page, "editor-mailings-countdown")
    page.goto(article_url)

    page.click("button.cancel-send")
    page.wait_for_selector(".messagelist .success")
    assert "nobody was mailed" in page.locator(".messagelist").inner_text()
    mailing = Mailing.objects.get()
    assert mailing.status == Mailing.Status.CANCELLED
    assert Article.objects.get().is_public  # the post stays published
    expect(page.locator(".field-mailing_progress")).to_contain_text("Cancelled: nobody was mailed")
    page.goto(f"{live_server.url}/admin/subscriptions/mailing/")
    expect(page.locator("#result_list")).to_contain_text("Cancelled: nobody was mailed")
    screenshot(page, "editor-mailing-cancelled")
    celery_worker.drain()
    assert smtp_server.messages == []


def test_an_editor_sends_a_correction_and_readers_see_it(
    live_server, page, browser, screenshot, celery_worker, smtp_server
):
    readers = [make_subscriber(f"reader{i}@example.com") for i in range(3)]
    article = make_article(
        "Sessions visits El Paso", summary="The former attorney general spoke on Monday."
    )
    mailing = Mailing.objects.get()
    wait_for_done(mailing)
    celery_worker.drain()
    smtp_server.clear()
    late = make_subscriber("late@example.com")

    _log_in(page, live_server, f"/admin/subscriptions/mailing/{mailing.pk}/change/")
    screenshot(page, "editor-mailing-sent")
    page.click("text=Send a correction")
    page.fill("#id_text", "He spoke on Tuesday, not Monday.")
    page.click("input[name=preview]")
    preview = page.frame_locator(".correction-preview iframe")
    expect(preview.locator("h1")).to_have_text("Sessions visits El Paso")
    expect(preview.locator(".correction-note")).to_have_text("He spoke on Tuesday, not Monday.")
    screenshot(page, "editor-correction-preview")
    page.click("input[name=send]")
    page.wait_for_selector(".messagelist .success")

    correction = Correction.objects.get()
    wait_until(
        lambda: Correction.objects.filter(pk=correction.pk, status="done").exists(), timeout=60
    )
    celery_worker.drain()
    assert received(smtp_server) == {r.email: 1 for r in readers}
    assert late.email not in received(smtp_server)
    assert CorrectionDelivery.objects.filter(status="sent").count() == 3
    assert {m["Subject"] for m in smtp_server.messages} == {"Correction: Sessions visits El Paso"}

    reader = browser.new_context().new_page()
    reader.goto(live_server.url + article.get_absolute_url())
    expect(reader.locator(".corrections")).to_contain_text("He spoke on Tuesday, not Monday.")
    screenshot(reader, "reader-article-correction")
    reader.set_content(smtp_server.messages[0].get_body(("html",)).get_content())
    screenshot(reader, "correction-email")
    reader.context.close()
