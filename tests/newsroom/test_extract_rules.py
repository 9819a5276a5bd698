"""The rules' pass: new names by their form, with a guessed kind."""

import pytest

from newsroom.extract import EntityIndex, extract
from newsroom.extract.rules import word_list
from newsroom.models import Entity
from tests.newsroom.reference import REFERENCE, REFERENCE_ENTITIES, REFERENCE_TITLE, make_entities


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


def test_the_word_lists_are_read_from_the_package_data():
    titles = word_list("titles")

    assert {"attorney general", "mayor", "inspector general"} <= titles
    assert not any(word.startswith("#") or word != word.strip() for word in titles)
