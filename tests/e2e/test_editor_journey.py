"""An editor writes and publishes an article in the admin; a reader finds it."""

import pytest

from newsroom.models import Article, Entity
from tests.factories import make_entity, make_staff

# serialized_rollback: the flush after this test must not lose the roles
# and permissions the migrations made, which later tests rely on.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery"


def _tag(page, row, name):
    """Choose `name` in the entity autocomplete (select2) of inline row `row`."""
    page.locator(f"#tags-{row} .select2-selection").click()
    page.locator(".select2-container--open .select2-search__field").fill(name.split()[0])
    page.locator(".select2-results__option", has_text=name).click()


def test_an_editor_publishes_in_ckeditor_and_readers_find_it_everywhere(
    live_server, page, browser, screenshot
):
    make_staff("editor", role="Editors", password=PASSWORD)
    make_entity("Jeff Sessions")
    make_entity("El Paso", kind=Entity.Kind.PLACE)

    page.goto(f"{live_server.url}/admin/login/?next=/admin/newsroom/article/add/")
    page.fill("#id_username", "editor")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")

    page.fill("#id_title", "Sessions visits El Paso")
    editor_body = page.frame_locator("iframe.cke_wysiwyg_frame").locator("body")
    editor_body.click()
    page.keyboard.type("The former attorney general spoke at the border on Monday.")
    page.keyboard.press("Enter")
    page.keyboard.type("Residents asked about the 2017 pilot program.")

    _tag(page, 0, "Jeff Sessions")
    page.select_option("#id_tags-0-role", "about")
    page.click(".add-row a")
    _tag(page, 1, "El Paso")
    page.select_option("#id_tags-1-role", "mentions")
    page.select_option("#id_status", "published")
    screenshot(page, "editor-article-form")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")

    article = Article.objects.get()
    assert article.is_public
    assert "<p>The former attorney general spoke at the border on Monday.</p>" in article.body
    assert set(article.tags.values_list("entity__name", "role")) == {
        ("Jeff Sessions", "about"),
        ("El Paso", "mentions"),
    }

    reader = browser.new_context().new_page()
    reader.goto(live_server.url + "/")
    reader.click("text=Sessions visits El Paso")
    assert reader.locator("h1").inner_text() == "Sessions visits El Paso"
    assert "Discover more from" in reader.locator(".subscribe h2").inner_text()
    screenshot(reader, "reader-article")
    for path in ("/people/jeff-sessions/", "/places/el-paso/"):
        reader.goto(live_server.url + path)
        assert reader.locator(".teaser h2", has_text="Sessions visits El Paso").count() == 1
    feed = reader.request.get(live_server.url + "/feed/").text()
    assert "<title>Sessions visits El Paso</title>" in feed
    reader.context.close()
