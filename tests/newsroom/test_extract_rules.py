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


def new_names(body, title=""):
    return {c.name: c for c in extract(title, body, EntityIndex([]), backend="rules").new}


@pytest.mark.parametrize(
    "body, counties",
    [
        (
            "The declaration covers Apache, Navajo and Coconino counties in Arizona.",
            ["Apache County", "Navajo County", "Coconino County"],
        ),
        (
            "Aid goes to the counties of Merced, Sacramento, and Santa Cruz.\nIt may grow.",
            ["Merced County", "Sacramento County", "Santa Cruz County"],
        ),
        (
            "Aid goes to Harris, Fort Bend, and San Jacinto Counties.",
            ["Harris County", "Fort Bend County", "San Jacinto County"],
        ),
    ],
)
def test_each_county_of_a_list_is_a_place(body, counties):
    found = new_names(body)

    assert [name for name in found if name.endswith("County")] == counties
    assert {found[name].kind for name in counties} == {Entity.Kind.PLACE}


def test_an_acronym_defined_in_brackets_is_an_alias_of_its_name():
    body = (
        "The Federal Emergency Management Agency (FEMA) said it would help. "
        "FEMA staff arrived on Monday, using video relay service (VRS)."
    )

    found = new_names(body)

    assert list(found) == ["Federal Emergency Management Agency"]
    fema = found["Federal Emergency Management Agency"]
    assert (fema.kind, fema.aliases, fema.count) == (Entity.Kind.ORGANIZATION, ["FEMA"], 2)


def test_a_person_is_found_after_any_title_and_an_office_in_it_is_an_organisation():
    body = (
        "National Climate Advisor Ali Zaidi, Attorney General Merrick Garland and "
        "Director of White House Office of Intergovernmental Affairs Julie Chavez Rodriguez "
        "met Gov. Katie Hobbs in Phoenix."
    )

    kinds = {name: c.kind for name, c in new_names(body).items()}

    assert kinds == {
        "Ali Zaidi": Entity.Kind.PERSON,
        "Merrick Garland": Entity.Kind.PERSON,
        "White House Office of Intergovernmental Affairs": Entity.Kind.ORGANIZATION,
        "Julie Chavez Rodriguez": Entity.Kind.PERSON,
        "Katie Hobbs": Entity.Kind.PERSON,
        "Phoenix": Entity.Kind.PLACE,
    }


def test_two_titled_people_and_their_possessives_are_each_one_person():
    body = (
        "President Biden and Vice President Harris met Prime Minister Albanese. "
        "Biden’s plan was discussed in the Attorney’s Office for the District of Oregon."
    )

    found = new_names(body)

    assert {name: c.kind for name, c in found.items() if c.kind == Entity.Kind.PERSON} == {
        "Biden": Entity.Kind.PERSON,
        "Harris": Entity.Kind.PERSON,
        "Albanese": Entity.Kind.PERSON,
    }
    assert found["Biden"].count == 2
    assert "Biden’s plan" not in found


def test_places_come_from_the_gazetteer_and_names_of_laws_are_not_proposed():
    body = "Officials in Liberia and Nevada praised the Inflation Reduction Act on Monday."

    assert {name: c.kind for name, c in new_names(body).items()} == {
        "Liberia": Entity.Kind.PLACE,
        "Nevada": Entity.Kind.PLACE,
    }


def test_addresses_and_lines_in_capitals_are_not_read():
    body = (
        "Apply at www.DisasterAssistance.gov or write to NEWS-DESK@AGENCY.GOV.\n"
        "FOR FURTHER INFORMATION MEDIA SHOULD CONTACT THE NEWS DESK."
    )

    assert new_names(body) == {}


def kinds_of(body, title=""):
    return {c.name: c.kind for c in extract(title, body, EntityIndex([]), backend="rules").new}


def test_a_city_before_a_state_abbreviation_is_a_place_and_the_postal_code_no_name():
    kinds = kinds_of(
        "The mayors came from Atlanta, GA Baltimore, MD and Boston. "
        "A jury in Montgomery, Ala. convicted him. He lives in Mayfield, Kentucky."
    )

    assert kinds == {
        "Atlanta": Entity.Kind.PLACE,
        "Baltimore": Entity.Kind.PLACE,
        "Boston": Entity.Kind.PLACE,
        "Montgomery": Entity.Kind.PLACE,
        "Alabama": Entity.Kind.PLACE,
        "Mayfield": Entity.Kind.PLACE,
        "Kentucky": Entity.Kind.PLACE,
    }


def test_a_dateline_in_capitals_is_a_place():
    kinds = kinds_of(
        "ATLANTA, Ga. -- Six centers will open.\n\nWASHINGTON, D.C. – The agency said so."
    )

    assert kinds["Atlanta"] == Entity.Kind.PLACE
    assert kinds["Georgia"] == Entity.Kind.PLACE
    assert kinds["Washington, D.C."] == Entity.Kind.PLACE


def test_every_item_of_a_list_of_places_is_a_place():
    kinds = kinds_of("Centers are open in Ahoskie, Bayboro, Kill Devil Hills, Roper and Windsor.")

    assert set(kinds.values()) == {Entity.Kind.PLACE}
    assert {"Ahoskie", "Kill Devil Hills", "Roper", "Windsor"} <= set(kinds)


def test_a_list_of_people_that_lost_its_line_breaks_gives_each_person():
    kinds = kinds_of(
        "The council includes:\nMarc Andreessen Sergey Brin Safra Catz Larry Ellison\n"
    )

    assert kinds == dict.fromkeys(
        ["Marc Andreessen", "Sergey Brin", "Safra Catz", "Larry Ellison"], Entity.Kind.PERSON
    )


def test_two_people_of_one_surname_and_members_of_congress():
    kinds = kinds_of(
        "Evelyn and Joseph Djoumessi were sentenced. Congresswoman Nancy Mace (R-SC) and "
        "Secretary of Homeland Security Alejandro N. Mayorkas and FEMA Administrator "
        "Deanne Criswell spoke."
    )

    assert kinds == {
        "Evelyn Djoumessi": Entity.Kind.PERSON,
        "Joseph Djoumessi": Entity.Kind.PERSON,
        "Nancy Mace": Entity.Kind.PERSON,
        "Alejandro N. Mayorkas": Entity.Kind.PERSON,
        "FEMA": Entity.Kind.ORGANIZATION,
        "Deanne Criswell": Entity.Kind.PERSON,
    }


def test_tribes_are_organisations_and_designations_are_no_names():
    kinds = kinds_of(
        "Damage in the county of Okanogan and the Confederated Tribes of the Colville "
        "Reservation. The Navajo Nation helped. The Expedition 70 crew flew on SpaceX Crew-7."
    )

    assert kinds["Okanogan County"] == Entity.Kind.PLACE
    assert kinds["Confederated Tribes of the Colville Reservation"] == Entity.Kind.ORGANIZATION
    assert kinds["Navajo Nation"] == Entity.Kind.ORGANIZATION
    assert not {"Expedition", "SpaceX Crew"} & set(kinds)
