"""load_seeds: the reference article, plain text files and bad files."""

import re
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from newsroom.models import Article, ArticleEntity, Entity
from newsroom.seeds import first_sentence

pytestmark = pytest.mark.django_db

SEEDS = Path(settings.BASE_DIR) / "seeds"
REFERENCE = SEEDS / "000_629ffa57cfc0d820.txt"
# The reference article's text as the site found it, footer included.
ORIGINAL = REFERENCE.read_text(encoding="utf-8").split("---\n", 2)[2]
PARAGRAPHS = [line for line in ORIGINAL.splitlines() if line.strip()][:-2]


def load(*args):
    call_command("load_seeds", *[str(a) for a in args], stdout=open("/dev/null", "w"))


def snapshot():
    return (
        list(
            Article.objects.values_list(
                "pk", "title", "body", "status", "published_at", "updated_at"
            )
        ),
        list(Entity.objects.values_list("pk", "name", "slug", "aliases", "updated_at")),
        list(ArticleEntity.objects.values_list("article", "entity", "role")),
    )


def test_the_reference_article_is_published_with_its_paragraphs_and_entities(client):
    load()
    article = Article.objects.get()
    assert article.title == "Report says Sessions and Rosenstein pushed child separations"
    assert article.is_public
    html = client.get(article.get_absolute_url()).content.decode()
    assert "<h1>Report says Sessions and Rosenstein pushed child separations</h1>" in html
    body = re.search(r'<div class="body">(.*?)</div>', html, re.S).group(1)
    rendered = re.findall(r"<p>(.*?)</p>", body, re.S)
    assert len(PARAGRAPHS) == 10
    assert rendered == [p.replace("&", "&amp;") for p in PARAGRAPHS]
    for path in [
        "/people/jeff-sessions/",
        "/people/rod-rosenstein/",
        "/people/michael-horowitz/",
        "/organizations/justice-department/",
        "/organizations/the-new-york-times/",
        "/places/el-paso/",
    ]:
        assert f'href="{path}"' in html
        assert client.get(path).status_code == 200
    assert "Discover more from" not in article.body
    assert "Subscribe to get the latest posts" not in article.body
    assert f"Discover more from {settings.SITE_NAME}" in html
    assert "Subscribe to get the latest posts sent to your email." in html


def test_the_reference_entities_have_their_kinds_and_roles():
    load()
    tags = {
        t.entity.name: (t.entity.kind, t.role)
        for t in ArticleEntity.objects.select_related("entity")
    }
    assert tags["Jeff Sessions"] == ("person", "about")
    assert tags["Rod Rosenstein"] == ("person", "about")
    assert tags["Justice Department"] == ("organization", "about")
    assert tags["The New York Times"] == ("organization", "mentions")
    assert tags["El Paso"] == ("place", "mentions")
    assert Entity.objects.get(name="Jeff Sessions").alias_list == ["Sessions"]


def test_a_second_load_creates_and_changes_nothing():
    load()
    before = snapshot()
    load()
    assert snapshot() == before


def test_an_editors_change_is_not_overwritten_by_a_second_load():
    load()
    Article.objects.update(title="Edited by an editor")
    load()
    assert Article.objects.get().title == "Edited by an editor"


def test_no_email_marks_the_article_not_to_be_emailed():
    load(REFERENCE, "--no-email")
    assert Article.objects.get().email_subscribers is False


def test_a_plain_text_file_takes_its_title_from_the_first_sentence(tmp_path):
    plain = tmp_path / "plain.txt"
    shutil.copy(REFERENCE, plain)
    plain.write_text(ORIGINAL, encoding="utf-8")
    load(plain)
    article = Article.objects.get()
    assert article.title == (
        "A new report by the inspector general shows that former U.S. Attorney General "
        "Jeff Sessions, alongside former deputy Rod Rosenstein, pushed for the separation "
        "of children from parents who were crossing into the United States illegally."
    )
    assert article.body.count("<p>") == 10
    assert "Discover more" not in article.body


def test_paragraphs_separated_by_blank_lines_are_joined(tmp_path):
    path = tmp_path / "wrapped.txt"
    path.write_text("First line of one\nparagraph.\n\nSecond paragraph here.\n", encoding="utf-8")
    load(path)
    assert (
        Article.objects.get().body
        == "<p>First line of one paragraph.</p>\n<p>Second paragraph here.</p>"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Mr. Smith went to Washington. Then he left.", "Mr. Smith went to Washington."),
        ("“We need it,” she said. Later on.", "“We need it,” she said."),
        ("No full stop at all", "No full stop at all"),
    ],
)
def test_first_sentence_skips_abbreviations(text, expected):
    assert first_sentence(text) == expected


BAD_FILES = {
    "bad-yaml.txt": ("---\ntitle: One\nentities: [unclosed\n---\nBody.\n", 3, "not valid YAML"),
    "bad-kind.txt": (
        "---\ntitle: Two\nentities:\n  - {name: A, kind: person}\n  - {name: B, kind: planet}\n---\nBody.\n",
        5,
        "kind of 'B'",
    ),
    "bad-role.txt": (
        "---\ntitle: Three\nentities:\n  - {name: A, kind: person, role: hero}\n---\nBody.\n",
        4,
        "role of 'A'",
    ),
    "unclosed.txt": ("---\ntitle: Four\nBody.\n", 1, "no closing ---"),
    "empty-body.txt": ("---\ntitle: Five\n---\n\n", 4, "no text"),
    "bad-date.txt": ("---\ntitle: Six\ndate: yesterday\n---\nBody.\n", 3, "date must look like"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_is_named_with_its_line_and_nothing_is_created(tmp_path, name):
    text, line, message = BAD_FILES[name]
    good = tmp_path / "a-good.txt"
    good.write_text("A good article. It would load.\n", encoding="utf-8")
    bad = tmp_path / name
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(CommandError) as error:
        load(tmp_path)
    assert f"{name}, line {line}:" in str(error.value)
    assert message in str(error.value)
    assert Article.objects.count() == 0
    assert Entity.objects.count() == 0


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("First line.\nCaf\xe9 second line.\n".encode("latin-1"))
    with pytest.raises(CommandError, match=r"latin1.txt, line 2: not UTF-8"):
        load(path)
    assert Article.objects.count() == 0


def test_a_missing_path_is_refused():
    with pytest.raises(CommandError, match="no such file"):
        load("/no/such/seed.txt")
