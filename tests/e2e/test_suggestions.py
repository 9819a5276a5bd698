"""The "Suggested entities" panel: an editor types, the panel suggests, the
editor accepts, the article is tagged."""

import pytest

from newsroom.models import Article, Entity
from tests.factories import make_entity, make_staff

# serialized_rollback: keep the roles the migrations made for later tests.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery"


def test_typing_a_known_name_suggests_it_and_accepting_it_tags_the_article(
    live_server, page, screenshot
):
    make_staff("editor", role="Editors", password=PASSWORD)
    sessions = make_entity("Jeff Sessions")
    el_paso = make_entity("El Paso", kind=Entity.Kind.PLACE)

    page.goto(f"{live_server.url}/admin/login/?next=/admin/newsroom/article/add/")
    page.fill("#id_username", "editor")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("iframe.cke_wysiwyg_frame")
    page.evaluate("window.notReloaded = true")

    page.fill("#id_title", "A report on border policy")
    editor_body = page.frame_locator("iframe.cke_wysiwyg_frame").locator("body")
    editor_body.click()
    page.keyboard.type("Attorney General Jeff Sessions pushed the policy, said Rod Rosenstein.")

    known = page.locator("#entity-suggestions .suggestions-known li", has_text="Jeff Sessions")
    known.wait_for()
    assert "suggested role: about" in known.inner_text()
    new = page.locator("#entity-suggestions .suggestions-new li", has_text="Rod Rosenstein")
    create = new.locator("a", has_text="Create").get_attribute("href")
    assert create == "/admin/newsroom/entity/add/?name=Rod+Rosenstein&kind=person"

    page.keyboard.press("Enter")
    page.keyboard.type("Families in El Paso were not told.")
    place = page.locator("#entity-suggestions .suggestions-known li", has_text="El Paso")
    place.wait_for()
    assert "suggested role: mentions" in place.inner_text()
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, "suggested-entities")

    # The first fills the inline's blank row; the second adds a row.
    known.locator("button", has_text="Add").click()
    place.locator("button", has_text="Add").click()
    assert page.input_value("#id_tags-0-entity") == str(sessions.pk)
    assert page.input_value("#id_tags-0-role") == "about"
    assert page.input_value("#id_tags-1-entity") == str(el_paso.pk)
    assert page.input_value("#id_tags-1-role") == "mentions"
    assert "tagged" in known.inner_text()
    assert "tagged" in place.inner_text()

    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")

    article = Article.objects.get()
    assert set(article.tags.values_list("entity__name", "role")) == {
        ("Jeff Sessions", "about"),
        ("El Paso", "mentions"),
    }
    assert not Entity.objects.filter(name="Rod Rosenstein").exists()
