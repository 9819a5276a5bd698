"""The post email as a reader sees it: rendered in Chromium, with a screenshot
saved to test-artifacts/post-email.png for a person to look at."""

import pytest

from newsroom.models import ArticleEntity, Entity
from subscriptions import delivery
from subscriptions.models import MAX_ID, Mailing, Subscriber
from tests.factories import make_article, make_entity, make_subscriber


@pytest.mark.django_db
def test_the_post_email_renders_with_its_links(
    page, screenshot, smtp_server, django_capture_on_commit_callbacks, settings
):
    settings.SUBSCRIPTIONS_POSTAL_ADDRESS = "Newsroom Ltd, 1 Printing House Square, London"
    reader = make_subscriber("reader@example.com", name="Ann Reader")
    with django_capture_on_commit_callbacks(execute=True):
        article = make_article(
            "Report says Sessions and Rosenstein pushed child separations",
            summary="A new report by the inspector general shows that former U.S. Attorney "
            "General Jeff Sessions pushed for the separation of children from parents.",
        )
        ArticleEntity.objects.create(article=article, entity=make_entity("Jeff Sessions"))
        ArticleEntity.objects.create(
            article=article, entity=make_entity("El Paso", kind=Entity.Kind.PLACE), role="mentions"
        )
    mailing = Mailing.objects.get()
    with django_capture_on_commit_callbacks(execute=False):
        delivery.fan_out(mailing.pk)
        delivery.send_mailing_batch(mailing.pk, 0, MAX_ID)
    (message,) = smtp_server.wait_for(1)

    page.set_viewport_size({"width": 700, "height": 900})
    page.set_content(message.get_body(("html",)).get_content())
    screenshot(page, "post-email")
    assert page.locator("h1").inner_text() == article.title
    assert page.get_by_role("link", name="Read on Newsroom").get_attribute("href") == (
        f"http://127.0.0.1:8000{article.get_absolute_url()}"
    )
    for name, purpose in (
        ("Unsubscribe", Subscriber.UNSUBSCRIBE),
        ("Change what you get", Subscriber.PREFERENCES),
    ):
        token = (
            page.get_by_role("link", name=name).get_attribute("href").rstrip("/").rsplit("/", 1)[1]
        )
        assert Subscriber.from_token(token, purpose) == reader
    assert page.get_by_role("link", name="El Paso").is_visible()
    assert "1 Printing House Square" in page.content()
    # CSS is inlined: the button is styled without a <style> element.
    background = page.get_by_role("link", name="Read on Newsroom").evaluate(
        "a => getComputedStyle(a).backgroundColor"
    )
    assert background == "rgb(26, 26, 26)"
