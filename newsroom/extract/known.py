"""Known entities: one Aho-Corasick automaton over the normalised words of
every entity's name and aliases (and a person's surname), cached per process
and rebuilt when the Entity table changes.
"""

import threading
from bisect import bisect_right
from dataclasses import dataclass

import ahocorasick
from django.db.models import Count, Max

from ..models import Entity
from .text import PERSON, name_key, role


@dataclass
class Known:
    """An Entity the text names; `first` is an offset in Extraction.text."""

    id: int
    name: str
    kind: str
    count: int
    first: int
    role: str


NAME_SUFFIXES = {"jr", "sr", "ii", "iii", "iv"}


class EntityIndex:
    """One automaton over every name, alias and person's surname."""

    def __init__(self, rows):
        """rows: (id, name, kind, aliases text) for every entity."""
        self.entities = {}
        entries = {}  # key → [(entity id, is a bare surname)]
        for pk, name, kind, aliases in rows:
            self.entities[pk] = (name, kind)
            labels = [name, *(a.strip() for a in aliases.splitlines())]
            for label in filter(None, labels):
                for key in _label_keys(label):
                    entries.setdefault(key, []).append((pk, False))
            words = [w for w in name_key(name).split() if w not in NAME_SUFFIXES]
            if kind == PERSON and len(words) >= 2:
                entries.setdefault(f" {words[-1]} ", []).append((pk, True))
        self.automaton = ahocorasick.Automaton()
        for key, found in entries.items():
            # What find() needs of a match, worked out once: how far back from
            # its end its first word starts, minus its number of words, the
            # entities it names in full, and those of whom it is the surname.
            names = tuple(pk for pk, surname in found if not surname)
            surnames = tuple(pk for pk, surname in found if surname)
            value = (len(key) - 2, 1 - key.count(" "), names, surnames)
            self.automaton.add_word(key, value)
        if entries:
            self.automaton.make_automaton()

    def knows(self, name):
        """Is this name (or a surname) already an entity's?"""
        return self.knows_key(name_key(name))

    def knows_key(self, key):
        """knows(), given the name's key."""
        return bool(key) and (key in self.automaton or strip_the(key) in self.automaton)

    def find(self, doc):
        """Known entities in doc, and the set of word indexes they cover."""
        if not len(self.automaton):
            return [], set()
        text, phrase_starts, phrase_firsts = doc.matchable()
        words, lower = doc.words, doc.lower_words
        # (first word, -words, names, surnames) of each match, in text order;
        # but a single lower-case word is a common noun: "sessions", "mesa".
        matches = []
        for end, (back, minus_n, names, surnames) in self.automaton.iter(text):
            # The match's first word: its phrase's first, plus the spaces
            # between the phrase's start and the match's.
            start = end - back
            k = bisect_right(phrase_starts, start) - 1
            i = phrase_firsts[k] + text.count(" ", phrase_starts[k], start)
            if minus_n != -1 or words[i] not in lower:
                matches.append((i, minus_n, names, surnames))
        # Leftmost-longest: "Harbor Avenue" wins over the alias "Harbor". (No
        # two matches share a first word and a length: they would be one key.)
        matches.sort()
        chosen, covered_to, named = [], 0, set()
        for match in matches:
            if match[0] >= covered_to:
                chosen.append(match)
                covered_to = match[0] - match[1]
                if match[2]:
                    named.update(match[2])

        hits, covered = {}, set()
        starts, paragraph, title_end = doc.starts, doc.paragraph, doc.title_end
        lead = doc.first_paragraph
        for i, minus_n, names, surnames in chosen:
            # A surname of someone named in full beats an alias: in a text
            # about Dr. Marcus Webb, "Webb" is him, not the Webb telescope.
            pks = names
            if surnames and not named.isdisjoint(surnames):
                pks = (next(pk for pk in surnames if pk in named),)
            for pk in pks:
                hit = hits.get(pk)
                if hit is None:
                    hit = hits[pk] = [0, starts[i], False]
                hit[0] += 1
                # doc.leads(i): in the title or the first paragraph.
                hit[2] = hit[2] or starts[i] < title_end or paragraph[i] == lead
            if pks:
                covered.update(range(i, i - minus_n))
        known = [
            Known(pk, *self.entities[pk], count, first, role(leads, count))
            for pk, (count, first, leads) in hits.items()
        ]
        known.sort(key=lambda k: k.first)
        return known, covered


def strip_the(key):
    return key[4:] if key.startswith(" the ") and len(key) > 5 else key


def _label_keys(label):
    key = name_key(label)
    if not key:
        return []
    keys = {key, strip_the(key)}
    words = key.split()
    if len(words) > 1 and all(len(w) == 1 for w in words):
        keys.add(" " + "".join(words) + " ")  # "U.S." also matches "US"
    return keys


_cache = {"version": None, "index": None}
_cache_lock = threading.Lock()


def entity_index():
    """The index of the Entity table, rebuilt when the table has changed.

    The version is one aggregate query; count and max(id) change on add and
    delete, max(updated_at) on every save (a rename or new alias).
    """
    version = tuple(Entity.objects.aggregate(Count("id"), Max("id"), Max("updated_at")).values())
    with _cache_lock:
        if _cache["version"] != version:
            rows = Entity.objects.values_list("id", "name", "kind", "aliases")
            _cache["index"] = EntityIndex(rows.iterator(chunk_size=2000))
            _cache["version"] = version
        return _cache["index"]
