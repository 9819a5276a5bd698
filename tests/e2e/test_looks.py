"""What readers see, in headless Chromium: every public page and every email
passes axe-core with no serious or critical violation, looks right at phone,
tablet and desktop widths (screenshots in test-artifacts/, the README's in
docs/screenshots/ with `make screenshots`), and the subscribe paths work.
"""

import re
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from axe_playwright_python.sync_playwright import Axe
from django.utils import timezone

import subscriptions
from newsroom.models import Entity
from subscriptions import delivery, emails
from subscriptions.models import MAX_ID, Digest, Mailing, Subscriber
from tests.e2e.content import make_newsroom, remove_images
from tests.factories import make_subscriber

WIDTHS = {"desktop": 1280, "tablet": 768, "phone": 390}
AXE = Axe()


def axe_violations(page):
    """Serious and critical axe-core violations on the page, readably."""
    results = AXE.run(page)
    found = []
    for violation in results.response["violations"]:
        if violation["impact"] in ("serious", "critical"):
            targets = [" ".join(map(str, node["target"])) for node in violation["nodes"][:5]]
            found.append(
                f"{violation['id']} ({violation['impact']}): {violation['help']} — {targets}"
            )
    return found


# Form fields with no <label> (a placeholder is not one), but for the
# honeypot, which people never see.
UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
    .filter(f => f.type !== "hidden" && !f.closest("[aria-hidden=true]") && !f.labels.length)
    .map(f => f.outerHTML)"""


def assert_accessible(page, what):
    found = axe_violations(page)
    assert not found, f"axe-core on {what}:\n" + "\n".join(found)
    unlabelled = page.evaluate(UNLABELLED)
    assert not unlabelled, f"fields without a label on {what}: {unlabelled}"


@pytest.fixture
def newsroom(django_db_serialized_rollback, transactional_db, live_server, settings):
    """The content, committed for the live server. The flush after the test
    keeps what migrations created (serialized rollback): later tests rely on
    those rows."""
    settings.SITE_URL = live_server.url  # lead images in emails load from the live server
    reference = make_newsroom()
    yield reference
    remove_images()


def public_pages(reference):
    entity = Entity.objects.get(name="Jeff Sessions")
    return {
        "home": "/",
        "article": reference.get_absolute_url(),
        "entity": entity.get_absolute_url(),
        "entity-index": "/people/",
        "search": "/search/?q=bridge",
        "subscribe": "/subscribe/",
    }


def test_every_public_page_is_accessible_and_has_a_working_subscribe_link(
    newsroom, live_server, page, screenshot
):
    subscriber = make_subscriber("ann@example.com", topics=["jeff-sessions", "el-paso"])
    pages = {
        **public_pages(newsroom),
        "preferences": subscriber.preferences_path(),
        "unsubscribe": subscriber.unsubscribe_path(),
        "not-found": "/articles/no-such-story/",
    }
    for name, path in pages.items():
        page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
        page.goto(live_server.url + path)
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.locator("main#main").count() == 1
        assert_accessible(page, name)
        for width_name, width in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": 900})
            # Nothing is wider than the screen.
            assert page.evaluate("document.documentElement.scrollWidth") <= width, (name, width)
            docs = (name, width_name) in (("home", "desktop"), ("article", "phone"))
            screenshot(page, f"{name}-{width_name}", docs=docs)
        cta = page.locator("header.site-header").get_by_role("link", name="Subscribe")
        assert cta.get_attribute("href") == "/subscribe/", name

    # The header's Subscribe leads to a form that works.
    page.goto(live_server.url + "/articles/no-such-story/")
    page.locator("header.site-header").get_by_role("link", name="Subscribe").click()
    page.get_by_label("Email address").fill("bea@example.com")
    page.get_by_role("radio", name="A daily digest").check()
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_selector("text=Check your inbox")
    assert_accessible(page, "check your inbox")
    bea = Subscriber.objects.get(email="bea@example.com")
    assert (bea.status, bea.frequency) == (Subscriber.Status.PENDING, "daily")


def test_an_article_prints_without_navigation_or_forms(newsroom, live_server, page, screenshot):
    page.goto(live_server.url + newsroom.get_absolute_url())
    page.emulate_media(media="print")
    assert not page.locator(".navbar").is_visible()
    assert not page.locator("section.subscribe").is_visible()
    assert page.locator("article h1").is_visible() and page.locator("figure.lead img").is_visible()
    screenshot(page, "article-print")


def test_the_search_box_stays_on_the_navigation_bar_at_1280(newsroom, live_server, page):
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(live_server.url + "/")
    nav = page.locator(".navbar nav").bounding_box()
    search = page.locator(".navbar .search-box").bounding_box()
    assert abs(nav["y"] + nav["height"] / 2 - (search["y"] + search["height"] / 2)) < 8
    assert search["x"] > nav["x"] + nav["width"]


def test_subscribing_from_the_home_page_records_that_page(newsroom, live_server, page, settings):
    page.goto(live_server.url + "/")
    block = page.locator(".home-aside section.subscribe")
    block.get_by_label("Your email address").fill("cy@example.com")
    block.get_by_role("button", name="Subscribe").click()
    page.wait_for_selector("text=Check your inbox")
    cy = Subscriber.objects.get(email="cy@example.com")
    assert cy.consent_page == settings.SITE_URL + "/"
    assert cy.consent_wording.startswith("Discover more from")


# Queries the preferences and subscribe pages may make, whatever the number
# of topics on the site.
PAGE_QUERIES = 12


def test_preferences_with_10000_topics_show_what_the_reader_follows_and_find_more(
    newsroom, live_server, page, browser, screenshot, client, django_assert_max_num_queries
):
    Entity.objects.bulk_create(
        [Entity(name=f"Person {i:05d}", slug=f"person-{i:05d}") for i in range(10_000)]
    )
    key = {e.slug: e.topic_key for e in Entity.objects.filter(slug__startswith="person-")}
    key["jeff-sessions"] = Entity.objects.get(slug="jeff-sessions").topic_key
    reader = make_subscriber("dee@example.com", topics=[key["jeff-sessions"], key["person-04242"]])
    url = live_server.url + reader.preferences_path()
    # The page's work does not grow with the topics: the same few queries
    # as with a handful (no timing here: this machine is noisy; the page's
    # speed is in the web benchmark).
    with django_assert_max_num_queries(PAGE_QUERIES):
        assert client.get(reader.preferences_path()).status_code == 200
    page.goto(url)
    boxes = page.locator("input[name=topics]")
    assert boxes.count() <= 2 + 12  # what they follow and a few suggestions, never 10,000
    assert page.get_by_role("checkbox", name="Person 04242").is_checked()
    assert len(page.content()) < 60_000
    assert_accessible(page, "preferences with 10,000 topics")
    screenshot(page, "preferences-10000-topics")

    # With JavaScript, matches appear as the reader types.
    page.get_by_label("Find a person, organisation, place or topic").fill("Person 0888")
    page.get_by_role("checkbox", name="Person 08881").check()
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector("text=Saved.")
    assert reader.topics() == sorted(
        key[s] for s in ("jeff-sessions", "person-04242", "person-08881")
    )

    # Without it, "Find" posts the form back, changing nothing, and lists them.
    context = browser.new_context(java_script_enabled=False)
    plain = context.new_page()
    plain.goto(url)
    plain.get_by_label("Find a person, organisation, place or topic").fill("Person 0777")
    plain.get_by_role("button", name="Find").click()
    plain.get_by_role("checkbox", name="Person 07771").check()
    assert plain.get_by_role("checkbox", name="Person 04242").is_checked()  # still there
    assert reader.topics() == sorted(
        key[s] for s in ("jeff-sessions", "person-04242", "person-08881")
    )
    screenshot(plain, "preferences-found")
    plain.get_by_role("button", name="Save").click()
    plain.wait_for_selector("text=Saved.")
    context.close()
    assert reader.topics() == sorted(
        key[s] for s in ("jeff-sessions", "person-04242", "person-07771", "person-08881")
    )

    # The subscribe page is the same at that scale.
    with django_assert_max_num_queries(PAGE_QUERIES):
        assert client.get("/subscribe/").status_code == 200
    page.goto(live_server.url + "/subscribe/")
    assert page.locator("input[name=topics]").count() <= 12
    screenshot(page, "subscribe-10000-topics")


def all_emails(reference, smtp_server, capture):
    """One email of each kind, through the app's own code and a real SMTP
    server: {kind: message}."""
    reader = make_subscriber("ann@example.com", name="Ann Reader")
    make_subscriber("daily@example.com", frequency="daily")
    pending = make_subscriber("new@example.com", status=Subscriber.Status.PENDING)
    emails.confirmation(pending).send()
    emails.welcome(reader).send()
    with capture(execute=False):
        mailing = subscriptions.announce(reference)
        delivery.fan_out(mailing.pk)
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    tomorrow = timezone.now().astimezone(timezone.get_current_timezone()) + timedelta(days=1)
    digest_time = datetime.combine(tomorrow.date(), datetime.min.time(), tomorrow.tzinfo)
    with time_machine.travel(digest_time + timedelta(hours=9), tick=False):
        with capture(execute=False):
            Digest.objects.create_due()
            delivery.send_digest_batch(0, MAX_ID)
    messages = smtp_server.wait_for(4)
    assert Mailing.objects.count() == 1

    def kind(message):
        if message["To"] == "new@example.com":
            return "confirmation"
        if message["Subject"].startswith("Welcome"):
            return "welcome"
        return "digest" if "digest" in message["Subject"] else "post"

    return {kind(m): m for m in messages}


@pytest.mark.parametrize("content", ["summary", "full"])
def test_every_email_is_accessible_in_light_and_dark_at_desktop_and_phone_widths(
    newsroom,
    page,
    screenshot,
    smtp_server,
    settings,
    content,
    django_capture_on_commit_callbacks,
):
    settings.SUBSCRIPTIONS_EMAIL_CONTENT = content
    settings.SUBSCRIPTIONS_POSTAL_ADDRESS = "Newsroom Ltd, 1 Printing House Square, London"
    found = all_emails(newsroom, smtp_server, django_capture_on_commit_callbacks)
    assert set(found) == {"confirmation", "welcome", "post", "digest"}
    for kind, message in found.items():
        if content == "full" and kind != "post":
            continue
        name = kind if content == "summary" else "post-full"
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        # The text part reads on its own: no markup, and every link of the HTML.
        links = set(re.findall(r'href="([^"]+)"', html))
        assert links
        for link in links:
            link = link.replace("&amp;", "&")
            assert link in text, f"{kind}: {link} is missing from the text part"
        assert not re.search(r"<[a-z/][^>]*>|&[a-z]+;", text), f"{kind}: HTML in the text part"
        assert 'role="presentation"' in html and '<html lang="en"' in html
        assert 'name="color-scheme" content="light dark"' in html
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            for width_name, width in (("desktop", 800), ("phone", 390)):
                page.set_viewport_size({"width": width, "height": 900})
                page.set_content(html, wait_until="load")
                if width_name == "desktop":
                    assert_accessible(page, f"the {kind} email ({scheme})")
                docs = kind == "post" and content == "summary" and width_name == "desktop"
                screenshot(page, f"email-{name}-{scheme}-{width_name}", docs=docs)
        if kind == "post":
            page.emulate_media(color_scheme="light")
            page.set_content(html, wait_until="load")
            image = page.locator("img.lead-image")
            assert image.get_attribute("alt") == newsroom.lead_image_alt
            assert urlsplit(image.get_attribute("src")).scheme == "http"
            assert image.evaluate("i => i.naturalWidth") > 0  # it loads from the site
            assert image.bounding_box()["width"] <= 600
            assert page.get_by_role("link", name="View in browser").get_attribute("href") == (
                settings.SITE_URL + newsroom.get_absolute_url()
            )
            assert page.get_by_role("link", name="Jeff Sessions").is_visible()
            assert "Katie Benner" in page.content()
