"""The optional NER backend: when spaCy and a model are installed, spaCy
proposes the new candidates instead of the rules.
"""

import functools
import re

from django.conf import settings

from .known import strip_the
from .rules import Tally
from .text import ORGANIZATION, PERSON, PLACE, name_key

SPACY_KINDS = {"PERSON": PERSON, "ORG": ORGANIZATION, "GPE": PLACE, "LOC": PLACE, "FAC": PLACE}


@functools.cache
def spacy_pipeline():
    """A spaCy pipeline when spaCy and a model are installed, else None."""
    try:
        import spacy

        return spacy.load(getattr(settings, "NEWSROOM_SPACY_MODEL", "en_core_web_sm"))
    except (ImportError, OSError):
        return None


def spacy_candidates(doc, index, covered, nlp):
    covered_chars = {doc.starts[i] for i in covered}
    tally = Tally()
    word_at = {start: i for i, start in enumerate(doc.starts)}
    for ent in nlp(doc.text).ents:
        kind = SPACY_KINDS.get(ent.label_)
        i = word_at.get(ent.start_char)
        if kind is None or i is None or ent.start_char in covered_chars:
            continue
        name = re.sub(r"^the\s+|['’]s$", "", ent.text.strip())
        if name and not index.knows(name):
            tally.add(strip_the(name_key(name)), name, kind, doc, i)
    return tally.candidates()
