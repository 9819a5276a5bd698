"""The known-entity pass: names and aliases of the Entity table in a text."""

import pytest

from newsroom.extract import ABOUT, MENTIONS, entity_index, extract
from newsroom.models import Entity
from tests.newsroom.reference import (
    REFERENCE,
    REFERENCE_ENTITIES,
    REFERENCE_TITLE,
    known_by_name,
    make_entities,
)


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
