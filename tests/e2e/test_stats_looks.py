"""Engagement stats as editors and readers see them, in headless Chromium:
a mailing's numbers and its 48-hour chart, the subscribers-over-time chart
on the subscriber list, and the opt-out on a reader's preferences page.
Screenshots in test-artifacts/."""

import math
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

import subscriptions
from subscriptions.models import Delivery, StatCount, StatKind, Subscriber
from tests.factories import make_article

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery"


@pytest.fixture
def newsletter(settings, live_server):
    """A mailing sent to 500 readers 47 hours ago, with a day and a half of
    opens and clicks, and 90 days of sign-ups, departures and bounces."""
    settings.SITE_URL = live_server.url
    settings.SUBSCRIPTIONS_STATS = True
    settings.SUBSCRIPTIONS_STATS_PER_READER = True
    now = timezone.now()
    readers = []
    for i in range(600):
        status = "unsubscribed" if i % 9 == 0 else "suppressed" if i % 23 == 0 else "confirmed"
        confirmed = now - timedelta(days=88 * (1 - i / 600) ** 2, hours=i % 7)
        readers.append(
            Subscriber(
                email=f"reader{i}@example.com",
                status=status,
                confirmed_at=confirmed,
                unsubscribed_at=min(now, confirmed + timedelta(days=3 + i % 11))
                if status == "unsubscribed"
                else None,
                suppressed_at=min(now, confirmed + timedelta(days=2))
                if status == "suppressed"
                else None,
            )
        )
    readers = Subscriber.objects.bulk_create(readers)
    article = make_article("Report says Sessions and Rosenstein pushed child separations")
    mailing = subscriptions.announce(article)
    sent = now - timedelta(hours=47)
    Delivery.objects.bulk_create(
        [
            Delivery(mailing=mailing, subscriber=r, status="sent", sent_at=sent)
            for r in readers
            if r.status == Subscriber.Status.CONFIRMED
        ],
        # The mailing's own fan-out (no undo window in tests) may have
        # listed them already: they were sent 47 hours ago all the same.
        update_conflicts=True,
        unique_fields=["mailing", "subscriber"],
        update_fields=["status", "sent_at"],
    )
    StatCount.objects.add(mailing.pk, StatKind.OPEN_MACHINE, -1, sent, n=14)
    StatCount.objects.add(mailing.pk, StatKind.CLICK_MACHINE, 0, sent, n=22)
    StatCount.objects.add(mailing.pk, StatKind.OPEN_MPP, -1, sent, n=31)
    for hour in range(0, 47):
        at = sent + timedelta(hours=hour, minutes=5)
        opens = round(40 * math.exp(-hour / 5) + (6 if 13 <= hour <= 15 else 0))
        clicks = round(opens * 0.3)
        if opens:
            StatCount.objects.add(mailing.pk, StatKind.OPEN, -1, at, n=opens)
        if clicks:
            for link in range(min(len(mailing.links), 3)):
                StatCount.objects.add(
                    mailing.pk, StatKind.CLICK, link, at, n=max(1, clicks // (link + 1))
                )
    return mailing


@pytest.fixture
def admin_page(live_server, page, newsletter):
    User.objects.create_superuser("chief", "chief@example.com", PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "chief")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    return page


def test_a_mailings_engagement_page_draws_its_first_48_hours(
    admin_page, live_server, newsletter, screenshot
):
    page = admin_page
    page.goto(f"{live_server.url}/admin/subscriptions/engagement/")
    row = page.locator("#result_list tr", has_text="Report says Sessions")
    assert row.count() == 1
    # All seven numbers fit beside the title.
    assert row.locator("td").count() == 7
    for cell in row.locator("td").all():
        box = cell.bounding_box()
        assert (
            box["x"] + box["width"]
            <= page.locator("#changelist-form").bounding_box()["x"]
            + page.locator("#changelist-form").bounding_box()["width"]
            + 1
        )
    screenshot(page, "admin-engagement-list")
    row.locator("a").first.click()
    page.wait_for_selector(".stats-chart svg")
    chart = page.locator(".stats-chart svg")
    box = chart.bounding_box()
    assert box["width"] > 600 and box["height"] > 150
    # Four lines, each drawn (a polyline with a real extent), and a legend.
    lines = chart.locator("polyline")
    assert lines.count() == 4
    assert lines.first.bounding_box()["height"] > 50
    assert "people's opens" in page.locator(".stats-legend").inner_text()
    assert page.locator(".engagement-numbers").get_by_text("Apple MPP").is_visible()
    assert page.locator(".engagement-links tbody tr").count() == min(len(newsletter.links), 3)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    screenshot(page, "admin-engagement-mailing", docs=True)


def test_the_subscriber_list_shows_subscribers_over_time(admin_page, live_server, screenshot):
    page = admin_page
    page.goto(f"{live_server.url}/admin/subscriptions/subscriber/")
    chart = page.locator(".stats-chart svg")
    assert chart.is_visible()
    assert chart.locator("polyline").count() == 3
    confirmed = chart.locator("polyline").first.bounding_box()
    assert confirmed["width"] > 600 and confirmed["height"] > 40
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    screenshot(page, "admin-subscribers-over-time")


def test_a_reader_can_opt_out_of_being_counted(live_server, page, newsletter, screenshot):
    reader = Subscriber.objects.filter(status="confirmed").first()
    page.goto(live_server.url + reader.preferences_path())
    box = page.get_by_label("Do not count my opens and clicks individually")
    assert box.is_visible() and not box.is_checked()
    screenshot(page, "preferences-stats-opt-out")
    box.check()
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved.").wait_for()
    reader.refresh_from_db()
    assert reader.stats_opt_out
