import io
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from newsroom.extract import ABOUT, MENTIONS, EntityIndex, entity_index, extract
from newsroom.management.commands.evaluate_extraction import (
    labelled_entities,
    load_set,
    score_known,
    score_new,
)
from newsroom.models import Article, ArticleEntity, Entity
from tests.factories import make_staff

SET = Path(__file__).parent / "extraction_set"
REFERENCE = (SET / "00_reference.txt").read_text(encoding="utf-8")
# Without front matter the loader takes the first sentence as the title.
REFERENCE_TITLE = REFERENCE.split(". ")[0] + "."

REFERENCE_ENTITIES = [
    ("Jeff Sessions", Entity.Kind.PERSON),
    ("Rod Rosenstein", Entity.Kind.PERSON),
    ("Michael Horowitz", Entity.Kind.PERSON),
    ("Justice Department", Entity.Kind.ORGANIZATION),
    ("The New York Times", Entity.Kind.ORGANIZATION),
    ("El Paso", Entity.Kind.PLACE),
]


def make_entities(pairs):
    return [Entity.objects.create(name=name, kind=kind) for name, kind in pairs]


def known_by_name(title, body):
    return {k.name: k for k in extract(title, body).known}


@pytest.mark.django_db
def test_it_finds_the_known_entities_of_the_reference_article():
    make_entities(REFERENCE_ENTITIES)

    found = known_by_name(REFERENCE_TITLE, REFERENCE)

    assert set(found) == {name for name, _ in REFERENCE_ENTITIES}
    assert found["Jeff Sessions"].first == REFERENCE.index("Jeff Sessions")


@pytest.mark.django_db
def test_it_maps_a_bare_surname_to_the_full_name():
    make_entities(REFERENCE_ENTITIES)

    found = known_by_name(REFERENCE_TITLE, REFERENCE)

    # One "Jeff Sessions", then "Sessions" alone six times.
    assert REFERENCE.count("Jeff Sessions") == 1
    assert found["Jeff Sessions"].count == REFERENCE.count("Sessions")
    assert found["Rod Rosenstein"].count == REFERENCE.count("Rosenstein")


@pytest.mark.django_db
def test_a_bare_surname_alone_is_not_the_person():
    make_entities(REFERENCE_ENTITIES)

    assert known_by_name("", "Sessions of the committee ran late. Sessions said so.") == {}


@pytest.mark.django_db
@pytest.mark.parametrize("apostrophe", ["’", "'"])
def test_it_reads_possessives_with_either_apostrophe(apostrophe):
    make_entities(REFERENCE_ENTITIES)
    body = f"Michael Horowitz led it.\nLater, Horowitz{apostrophe}s report was published."

    found = known_by_name("", body)

    assert found["Michael Horowitz"].count == 2


@pytest.mark.django_db
def test_it_suggests_about_for_sessions_and_rosenstein_only():
    make_entities(REFERENCE_ENTITIES)

    roles = {name: k.role for name, k in known_by_name(REFERENCE_TITLE, REFERENCE).items()}

    assert roles == {
        "Jeff Sessions": ABOUT,
        "Rod Rosenstein": ABOUT,
        "Michael Horowitz": MENTIONS,
        "Justice Department": MENTIONS,
        "The New York Times": MENTIONS,
        "El Paso": MENTIONS,
    }


@pytest.mark.django_db
def test_a_name_in_the_title_is_about_and_one_mention_later_is_mentions():
    make_entities(
        [("Harbor Foods", Entity.Kind.ORGANIZATION), ("Lazard", Entity.Kind.ORGANIZATION)]
    )
    body = "<p>The grocer agreed a deal.</p><p>It was advised by Lazard.</p>"

    found = known_by_name("Harbor Foods buys a rival", body)

    assert found["Harbor Foods"].role == ABOUT
    assert found["Lazard"].role == MENTIONS


@pytest.mark.django_db
def test_it_ignores_case_punctuation_and_accents():
    make_entities([("Justice Department", Entity.Kind.ORGANIZATION)])
    Entity.objects.create(name="José Ortega", kind=Entity.Kind.PERSON)

    found = known_by_name("", "THE JUSTICE-DEPARTMENT said Jose Ortega was right.")

    assert set(found) == {"Justice Department", "José Ortega"}


@pytest.mark.django_db
def test_it_matches_aliases_and_prefers_the_longest_name():
    Entity.objects.create(name="Harbor Foods", kind=Entity.Kind.ORGANIZATION, aliases="Harbor\n")
    Entity.objects.create(name="Harbor Avenue", kind=Entity.Kind.PLACE)

    found = known_by_name("", "A bakery on Harbor Avenue. Harbor's shares fell.")

    assert found["Harbor Avenue"].count == 1
    assert found["Harbor Foods"].count == 1


@pytest.mark.django_db
def test_a_lowercase_common_word_is_not_a_one_word_entity():
    Entity.objects.create(name="Mesa", kind=Entity.Kind.PLACE)

    assert known_by_name("", "They climbed a mesa. The sessions ran late.") == {}


@pytest.mark.django_db
def test_it_reads_html_and_gives_offsets_in_the_plain_text():
    make_entities(REFERENCE_ENTITIES)
    body = "<p>Attorney General <strong>Jeff&nbsp;Sessions</strong> spoke.</p><p>In El Paso.</p>"

    result = extract("", body)

    first = {k.name: k.first for k in result.known}
    assert result.text == "Attorney General Jeff\xa0Sessions spoke.\nIn El Paso."
    assert result.text[first["Jeff Sessions"] :].startswith("Jeff")
    assert result.text[first["El Paso"] :].startswith("El Paso")


@pytest.mark.django_db
def test_the_automaton_is_rebuilt_after_an_entity_is_added_renamed_or_deleted():
    text = "Acme Widgets and Bolt Widgets both reported profits."
    assert known_by_name("", text) == {}

    acme = Entity.objects.create(name="Acme Widgets", kind=Entity.Kind.ORGANIZATION)
    assert set(known_by_name("", text)) == {"Acme Widgets"}

    acme.name = "Bolt Widgets"
    acme.save()
    assert set(known_by_name("", text)) == {"Bolt Widgets"}

    acme.aliases = "Acme Widgets"
    acme.save()
    assert known_by_name("", text)["Bolt Widgets"].count == 2

    acme.delete()
    assert known_by_name("", text) == {}


@pytest.mark.django_db
def test_an_unchanged_table_costs_one_query_per_extraction(django_assert_num_queries):
    make_entities(REFERENCE_ENTITIES)
    extract("", REFERENCE)  # builds the index

    with django_assert_num_queries(1):
        index = entity_index()
    with django_assert_num_queries(1):
        extract("", REFERENCE)
    assert entity_index() is index


def test_new_candidates_of_the_reference_article_have_the_right_kinds():
    result = extract(REFERENCE_TITLE, REFERENCE, EntityIndex([]), backend="rules")

    kinds = {c.name: c.kind for c in result.new}
    assert kinds == {
        "Jeff Sessions": Entity.Kind.PERSON,
        "Rod Rosenstein": Entity.Kind.PERSON,
        "Michael Horowitz": Entity.Kind.PERSON,
        "Justice Department": Entity.Kind.ORGANIZATION,
        "The New York Times": Entity.Kind.ORGANIZATION,
        "El Paso": Entity.Kind.PLACE,
        # Labelled too, and right: the design names both.
        "United States": Entity.Kind.PLACE,
        "Trump administration": Entity.Kind.ORGANIZATION,
    }


def test_new_candidates_carry_no_sentence_initial_noise():
    body = (
        "However, the mayor resigned. One aide said so. In May the council met. "
        "The Council met again. Just then, Maria Lopez arrived in Santa Fe."
    )

    names = [c.name for c in extract("", body, EntityIndex([]), backend="rules").new]

    assert names == ["Maria Lopez", "Santa Fe"]


def test_titles_before_a_name_are_not_part_of_it():
    body = "Justice Department Inspector General Michael Horowitz wrote it. Mayor Ann Lee agreed."

    kinds = {c.name: c.kind for c in extract("", body, EntityIndex([]), backend="rules").new}

    assert kinds == {
        "Justice Department": Entity.Kind.ORGANIZATION,
        "Michael Horowitz": Entity.Kind.PERSON,
        "Ann Lee": Entity.Kind.PERSON,
    }


@pytest.mark.django_db
def test_known_entities_are_not_proposed_again():
    make_entities(REFERENCE_ENTITIES)

    new = {c.name for c in extract(REFERENCE_TITLE, REFERENCE, backend="rules").new}

    assert new == {"United States", "Trump administration"}


@pytest.mark.django_db
def test_known_precision_and_recall_over_the_labelled_set():
    samples = load_set(SET)
    for name, kind, aliases in labelled_entities(samples):
        Entity.objects.create(name=name, kind=kind, aliases="\n".join(aliases))

    score = score_known(samples, index=entity_index())

    assert len(samples) >= 9
    assert score.precision >= 0.9, score.errors
    assert score.recall >= 0.85, score.errors


def test_new_candidate_precision_over_the_labelled_set():
    score = score_new(load_set(SET))

    assert score.precision >= 0.7, score.errors


SUGGEST_URL = "/admin/newsroom/article/suggest-entities/"


@pytest.mark.django_db
def test_the_suggestion_endpoint_answers_staff_and_tags_nothing(client):
    make_entities(REFERENCE_ENTITIES)
    client.force_login(make_staff("author", role="Authors"))

    response = client.post(SUGGEST_URL, {"title": "", "body": "<p>Jeff Sessions met Ann Lee.</p>"})

    assert response.status_code == 200
    data = response.json()
    assert [(k["name"], k["role"]) for k in data["known"]] == [("Jeff Sessions", "about")]
    assert [(c["name"], c["kind"]) for c in data["new"]] == [("Ann Lee", "person")]
    assert ArticleEntity.objects.count() == 0
    assert Entity.objects.count() == len(REFERENCE_ENTITIES)


@pytest.mark.django_db
def test_the_suggestion_endpoint_is_for_staff_only_and_post_only(client):
    assert client.post(SUGGEST_URL, {"body": "x"}).status_code == 302  # to the login page
    client.force_login(User.objects.create_user("reader", password="x"))
    assert client.post(SUGGEST_URL, {"body": "x"}).status_code == 302
    client.force_login(make_staff("editor"))
    assert client.get(SUGGEST_URL).status_code == 405


def load_plain_text(tmp_path, *options):
    seed = tmp_path / "plain.txt"
    seed.write_text(REFERENCE, encoding="utf-8")
    out = io.StringIO()
    call_command("load_seeds", str(seed), "--no-email", *options, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_load_seeds_tags_the_known_entities_of_a_file_without_front_matter(tmp_path):
    make_entities([("Jeff Sessions", Entity.Kind.PERSON), ("El Paso", Entity.Kind.PLACE)])

    out = load_plain_text(tmp_path)

    article = Article.objects.get()
    assert set(article.tags.values_list("entity__name", "role")) == {
        ("Jeff Sessions", ABOUT),
        ("El Paso", MENTIONS),
    }
    assert Entity.objects.count() == 2
    assert "tagged person “Jeff Sessions” (about)" in out
    assert "candidate person “Rod Rosenstein” (not created: use --create-entities)" in out


@pytest.mark.django_db
def test_load_seeds_creates_the_new_candidates_with_create_entities(tmp_path):
    out = load_plain_text(tmp_path, "--create-entities")

    kinds = dict(Entity.objects.values_list("name", "kind"))
    for name, kind in REFERENCE_ENTITIES:
        assert kinds[name] == kind
    tags = dict(Article.objects.get().tags.values_list("entity__name", "role"))
    assert tags["Jeff Sessions"] == ABOUT
    assert tags["El Paso"] == MENTIONS
    assert "created organization “Justice Department” (mentions)" in out
