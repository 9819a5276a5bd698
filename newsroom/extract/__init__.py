"""Entity suggestions: the people, organisations and places an article names.

`extract(title, body)` returns

- *known* entities — rows of the Entity table found by name or alias, with
  case, accents, punctuation and possessives ignored ("Horowitz’s"), plus the
  bare surname of a person the text also names in full ("Sessions");
- *new* candidates — proper names that are not entities yet, found by their
  form ("Rod Rosenstein", "… Department", "The … Times", "… administration",
  "in El Paso"), each with a guessed kind.

Both passes walk the text once. Known names are matched by one Aho-Corasick
automaton over normalised words, built from every name and alias and cached
per process; each call checks the table's version with one cheap query and
rebuilds the automaton only when an entity was added, renamed or deleted.

When spaCy and a model are installed, spaCy proposes the new candidates
instead of the rules. Nothing here writes to the database: the editor (or
`load_seeds --create-entities`) decides what gets tagged or created.

- text.py — plain text, words, normalising;
- known.py — the index of known entities;
- rules.py — new candidates by rule (word lists in data/);
- spacy.py — the optional spaCy backend.
"""

from dataclasses import dataclass, field

from .known import EntityIndex, Known, entity_index
from .rules import Candidate, rule_candidates
from .spacy import spacy_candidates, spacy_pipeline
from .text import ABOUT, MENTIONS, ORGANIZATION, PERSON, PLACE, Document, name_key, plain_text

__all__ = [
    "ABOUT",
    "MENTIONS",
    "ORGANIZATION",
    "PERSON",
    "PLACE",
    "Candidate",
    "Document",
    "EntityIndex",
    "Extraction",
    "Known",
    "entity_index",
    "extract",
    "name_key",
    "plain_text",
    "rule_candidates",
]


@dataclass
class Extraction:
    text: str  # the title, a blank line, the body as plain text
    known: list[Known] = field(default_factory=list)
    new: list[Candidate] = field(default_factory=list)


def extract(title, body, index=None, backend="auto"):
    """Known entities and new candidates in an article.

    index: an EntityIndex (default: the Entity table's). backend: "rules",
    "spacy" or "auto" (spaCy when a model is installed, else the rules).
    """
    doc = Document(title or "", body or "")
    index = index if index is not None else entity_index()
    known, covered = index.find(doc)
    nlp = spacy_pipeline() if backend in ("auto", "spacy") else None
    if backend == "spacy" and nlp is None:
        raise RuntimeError("spaCy or its model is not installed")
    if nlp is not None:
        new = spacy_candidates(doc, index, covered, nlp)
    else:
        new = rule_candidates(doc, index, covered)
    return Extraction(doc.text, known, new)
