"""The reference article and its entities, shared by the extraction tests."""

from pathlib import Path

from newsroom.extract import extract
from newsroom.models import Entity

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
