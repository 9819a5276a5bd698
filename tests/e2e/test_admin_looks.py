"""What editors see in the admin, in headless Chromium: the site's name in the
header, a dashboard on the index, full-width headline fields, readable
mailing and subscriber lists. Screenshots in test-artifacts/ (and the
README's in docs/screenshots/ with `make screenshots`)."""

import pytest
from django.contrib.auth.models import User

import subscriptions
from newsroom.models import Article, Entity
from subscriptions import delivery
from subscriptions.models import MAX_ID
from tests.e2e.content import make_newsroom, remove_images
from tests.factories import make_subscriber

# serialized_rollback: the flush after this test must not lose the roles
# and permissions the migrations made, which later tests rely on.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery"
LONG_ADDRESS = (
    "a.very.long.address.for.a.reader.who.likes.long.names@subdomain.example-newspaper.co.uk"
)


@pytest.fixture
def admin_page(live_server, page, settings, django_capture_on_commit_callbacks):
    settings.SITE_URL = live_server.url
    User.objects.create_superuser("chief", "chief@example.com", PASSWORD)
    reference = make_newsroom()
    for i in range(30):
        make_subscriber(f"reader{i}@example.com", name=f"Reader {i}")
    make_subscriber(LONG_ADDRESS, name="Someone With A Remarkably Long Name Indeed")
    followed = Entity.objects.filter(slug__in=["jeff-sessions", "el-paso", "rod-rosenstein"])
    make_subscriber("follower@example.com", topics=[e.topic_key for e in followed])
    make_subscriber("pending@example.com", status="pending")
    with django_capture_on_commit_callbacks(execute=False):
        for article in Article.objects.order_by("published_at")[:4]:
            mailing = subscriptions.announce(article)
            delivery.fan_out(mailing.pk)
        mailing = subscriptions.announce(reference)
        delivery.fan_out(mailing.pk)
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "chief")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    yield page
    remove_images()


def test_the_admin_looks_like_the_sites_and_helps_editors(admin_page, live_server, screenshot):
    page = admin_page
    assert page.locator("#site-name").inner_text() == "Newsroom"
    assert page.title().endswith("Newsroom admin")
    dashboard = page.locator("#subscriptions-dashboard")
    assert dashboard.get_by_text("Latest mailings").is_visible()
    assert dashboard.locator("tbody tr").filter(has_text="Report says Sessions").count() == 1
    assert "100%" in dashboard.locator("tr", has_text="Report says Sessions").inner_text()
    screenshot(page, "admin-index", docs=True)

    page.goto(f"{live_server.url}/admin/subscriptions/mailing/")
    screenshot(page, "admin-mailings")
    row = page.locator("#result_list tr", has_text="Report says Sessions")
    # Titles read in a few lines, not one word a line; topics by name; the
    # table fits beside the filters.
    assert row.locator("th.field-title").bounding_box()["width"] > 200
    assert row.locator("th.field-title a").bounding_box()["height"] < 4 * 20
    assert (
        page.locator("#result_list").bounding_box()["width"]
        <= page.locator("#changelist-form").bounding_box()["width"]
    )
    assert "Jeff Sessions" in row.locator("td.field-topic_list").inner_text()
    assert "[" not in row.locator("td.field-topic_list").inner_text()

    page.goto(f"{live_server.url}/admin/subscriptions/subscriber/")
    screenshot(page, "admin-subscribers")
    cell = page.locator("#result_list .truncate", has_text="a.very.long.address")
    assert cell.get_attribute("title") == LONG_ADDRESS
    assert cell.bounding_box()["width"] < 400
    # The list fits the window: no column pushed off screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert (
        page.locator("#result_list").bounding_box()["width"]
        <= page.locator("#changelist-form").bounding_box()["width"]
    )
    follower = page.locator("#result_list tr", has_text="follower@example.com")
    assert "Jeff Sessions" in follower.inner_text()

    article = Article.objects.get(title__startswith="Report says Sessions")
    page.goto(f"{live_server.url}/admin/newsroom/article/{article.pk}/change/")
    title = page.locator("#id_title").bounding_box()
    assert title["width"] > 600
    assert page.locator("#id_summary").bounding_box()["width"] > 600
    page.wait_for_selector("#entity-suggestions .suggestions-known li")
    # A section with nothing in it shows no heading.
    for section in ("known", "new"):
        empty = page.locator(f"#entity-suggestions .suggestions-{section}").evaluate(
            "ul => ul.children.length === 0"
        )
        heading = page.locator("#entity-suggestions h3", has_text=section.title())
        assert heading.is_visible() != empty
    screenshot(page, "admin-article-form")


def test_a_held_mailing_stands_out_where_editors_look(admin_page, live_server, screenshot):
    from subscriptions.models import Mailing
    from subscriptions.transports import Outcome

    page = admin_page
    mailing = Mailing.objects.filter(status=Mailing.Status.SENDING).exclude(
        title__startswith="Report says"
    )[0]
    reason = "401 from the provider: Mailgun API response 401 (Unauthorized): 'Forbidden'"
    assert mailing.moved(Outcome(held=reason))  # as a held batch of it leaves it

    page.goto(f"{live_server.url}/admin/")
    held = page.locator("#subscriptions-dashboard tr", has_text=mailing.title[:40]).locator(".held")
    assert "Held since" in held.inner_text() and "401" in held.inner_text()
    # Red, as Django's own errors are: not to be read past.
    assert held.evaluate("e => getComputedStyle(e).color") == "rgb(186, 33, 33)"
    page.goto(f"{live_server.url}/admin/subscriptions/mailing/")
    row = page.locator("#result_list tr", has_text=mailing.title[:40])
    assert "Held since" in row.locator(".held").inner_text()
    assert page.locator("#result_list .held").count() == 1
    screenshot(page, "admin-mailing-held")
