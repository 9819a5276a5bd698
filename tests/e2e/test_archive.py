"""The newsletter archive, a web version and the editor's email preview, in
headless Chromium: accessible, nothing wider than the screen, no reader's
links; screenshots in test-artifacts/ (newsletter-*, web-version-*,
admin-email-preview)."""

from datetime import timedelta

import pytest

import subscriptions
from newsroom.models import Article
from subscriptions import emails
from subscriptions.models import Mailing
from tests.e2e.content import make_newsroom, remove_images
from tests.e2e.test_looks import WIDTHS, assert_accessible
from tests.factories import make_staff

MARK = emails.placeholder("X").split("X")[0]
PASSWORD = "correct-horse-battery"


@pytest.fixture
def archive(
    django_db_serialized_rollback,
    transactional_db,
    live_server,
    settings,
    django_capture_on_commit_callbacks,
):
    """Every story of the small newsroom (test_looks') emailed, fan-outs never
    queued, the newest an email-only letter; (letter, mailings newest first).
    Committed for the live server; the flush after keeps what migrations made."""
    settings.SITE_URL = live_server.url
    make_newsroom()
    letter = Article.objects.create(
        title="From the editor: how we reported the separations story",
        summary="Six months, 40 interviews and one inspector general's report: a note for "
        "subscribers on how the story came together.",
        body="<p>When the report landed we had already spent six months on the story.</p>",
        byline="By the editor",
        status=Article.Status.PUBLISHED,
        email_only=True,
        email_subscribers=False,  # announced below, not on save
    )
    stories = Article.objects.live().order_by("published_at")
    with django_capture_on_commit_callbacks(execute=False):
        for article in stories:
            subscriptions.announce(article)
    for i, mailing in enumerate(Mailing.objects.order_by("pk")):
        Mailing.objects.filter(pk=mailing.pk).update(
            status=Mailing.Status.DONE, created_at=mailing.created_at + timedelta(seconds=i)
        )
    yield letter, list(Mailing.objects.order_by("-created_at"))
    remove_images()


def test_the_archive_and_a_web_version_look_like_a_publication(
    archive, live_server, page, screenshot
):
    letter, mailings = archive
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
    page.goto(live_server.url + "/")
    page.locator("nav[aria-label=Sections]").get_by_role("link", name="Newsletter").click()
    page.wait_for_url("**/newsletter/")
    titles = page.locator(".archive-list h2").all_inner_texts()
    assert titles == [m.title for m in mailings][:20]
    assert letter.title in titles  # email only: in the archive, on no other page
    assert_accessible(page, "the newsletter archive")
    for width_name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate("document.documentElement.scrollWidth") <= width, width
        screenshot(page, f"newsletter-archive-{width_name}")

    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
    page.get_by_role("link", name=mailings[1].title).click()
    page.wait_for_url(f"**/email/{mailings[1].web_key}/")
    content = page.content()
    assert MARK not in content and "/subscribe/unsubscribe/" not in content
    assert page.locator(".web-version h1").inner_text() == mailings[1].title
    assert_accessible(page, "a web version")
    for width_name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate("document.documentElement.scrollWidth") <= width, width
        screenshot(page, f"web-version-{width_name}")

    # The email-only letter: its web version works, its article address does not.
    page.goto(live_server.url + f"/email/{mailings[0].web_key}/")
    assert page.locator(".web-version h1").inner_text() == letter.title
    screenshot(page, "web-version-email-only-phone")
    assert page.goto(live_server.url + f"/articles/{letter.slug}/").status == 404


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_editor_previews_an_email_before_publishing(live_server, page, screenshot):
    make_staff("editor", role="Editors", password=PASSWORD)
    draft = Article.objects.create(
        title="Council approves the bridge repairs",
        summary="The vote was 7-2; the bridge closes to cars for 18 months.",
        body="<p>The council voted on Tuesday night.</p>",
        byline="By Maria Lopez",
        status=Article.Status.DRAFT,
    )
    page.goto(f"{live_server.url}/admin/login/?next=/admin/newsroom/article/{draft.pk}/change/")
    page.fill("#id_username", "editor")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Preview email").click()
    preview = opened.value
    preview.wait_for_load_state()
    preview.set_viewport_size({"width": 1280, "height": 900})
    assert preview.locator("#email-subject").inner_text() == draft.title
    frame = preview.frame_locator("#email-html")
    assert frame.locator("h1").inner_text() == draft.title
    assert frame.get_by_role("link", name="View in browser").count() == 1
    text = preview.locator("#email-text").inner_text()
    assert text.startswith("View in browser [1]") and draft.title in text
    assert MARK not in preview.content()
    screenshot(preview, "admin-email-preview")
    draft.refresh_from_db()
    assert draft.status == Article.Status.DRAFT and not Mailing.objects.exists()
