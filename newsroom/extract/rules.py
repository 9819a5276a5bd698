"""New candidates by rule: proper names that are not entities yet, found by
their form ("Rod Rosenstein", "… Department", "The … Times", "… administration",
"in El Paso"), each with a guessed kind.

The word lists the rules read live in data/*.txt, one word or phrase a line
("#" starts a comment); they are read once, when this module is imported.
"""

import re
from dataclasses import dataclass
from importlib.resources import files

from .known import strip_the
from .text import ORGANIZATION, PERSON, PLACE, name_key, role


def word_list(name):
    """The words of data/NAME.txt as a set."""
    text = files(__package__).joinpath("data", f"{name}.txt").read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return {line for line in lines if line and not line.startswith("#")}


@dataclass
class Candidate:
    """A proper name that is not an entity yet, with a guessed kind."""

    name: str
    kind: str
    count: int
    first: int
    role: str


# Words that start a sentence or a capitalised run but never a name.
STOPWORDS = word_list("stopwords")
CALENDAR = word_list("calendar")
# Lower-case words allowed inside a name: "Department of Justice".
CONNECTORS = {"of", "for", "and", "de", "del", "da", "di", "du", "van", "von", "der", "la"}
# Titles before a name; what follows is a person ("Attorney General Jeff Sessions").
TITLES = word_list("titles")
# Titles whose holder is named after a place: "Mesa Mayor Karen Holloway".
CIVIC_TITLES = {"mayor", "governor", "gov"}
# Lower-case words in front of a person's name: "winger Amara Diallo".
ROLE_NOUNS = word_list("role_nouns")
# Words that make a name an organisation, wherever they stand in it, and
# words that do so at its start ("University of …").
ORG_WORDS = word_list("org_words")
ORG_PREFIXES = word_list("org_prefixes")
# "The … Times": a capitalised "The" that belongs to the name.
NEWSPAPER_WORDS = word_list("newspaper_words")
# Words that make a name a place at its end ("… County") or its start ("San …").
PLACE_WORDS = word_list("place_words")
PLACE_PREFIXES = word_list("place_prefixes")
# Lower-case words before a place: "in El Paso", "into the United States".
PLACE_PREPOSITIONS = {"in", "at", "near", "from", "into", "across", "outside", "inside",
                      "throughout", "around", "toward", "towards"}  # fmt: skip
# Upper-case words that are not organisations ("CEO", "GDP").
ACRONYM_STOP = word_list("acronym_stop")
# Capitalised words that are not names ("Republicans", "Internet").
DEMONYM_ENDINGS = ("ian", "ians", "ese", "ish", "ans")
DEMONYMS = word_list("demonyms")


@dataclass
class _Chunk:
    words: list  # word indexes
    hint: str | None = None  # "person", "place" or "civic" (before a civic title)
    suffix: str = ""  # " administration"


def _title_length(doc, words, k):
    for n in (4, 3, 2, 1):
        if k + n <= len(words) and " ".join(doc.norms[j] for j in words[k : k + n]) in TITLES:
            return n
    return 0


def _is_newspaper(doc, words):
    return doc.norms[words[0]] == "the" and doc.norms[words[-1]] in NEWSPAPER_WORDS


def _context(doc, i):
    """ "place" or "person" from the lower-case words in front of word i."""
    j = i - 1
    if j >= 0 and doc.joined[i] and doc.norms[j] in {"the", "a", "an"}:
        i, j = j, j - 1
    if j < 0 or not doc.joined[i] or not doc.words[j].islower():
        return None
    if doc.norms[j] in PLACE_PREPOSITIONS:
        return "place"
    if doc.norms[j] in ROLE_NOUNS:
        return "person"
    return None


def _runs(doc, skip):
    """Maximal runs of capitalised words (and connectors between them)."""
    run = []
    for i in range(len(doc)):
        ok = i not in skip and (
            doc.capitalised(i)
            or (run and doc.norms[i] in CONNECTORS)
            # "University of Texas at Austin"
            or (run and doc.norms[i] == "at" and doc.norms[run[0]] == "university")
        )
        if run and (not ok or not doc.joined[i]):
            yield run
            run = []
        if ok and (run or doc.capitalised(i)):
            run.append(i)
    if run:
        yield run


def _chunks(doc, run):
    """Split a capitalised run into name chunks, dropping sentence-initial
    noise ("However", "In May", "The") and titles."""
    hint = _context(doc, run[0])
    while run and not _is_newspaper(doc, run):
        i, norm = run[0], doc.norms[run[0]]
        initial_common = doc.sentence_start[i] and (
            norm in doc.lower_words
            # "Shares of Greenleaf": a sentence-initial noun and its "of".
            or (len(run) > 2 and doc.norms[run[1]] in CONNECTORS and norm not in ORG_PREFIXES)
        )
        if not (norm in STOPWORDS or norm in CALENDAR or initial_common):
            break
        if norm in PLACE_PREPOSITIONS:
            hint = "place"
        run = run[1:]
        while run and doc.norms[run[0]] in CONNECTORS:
            run = run[1:]
    suffix = ""
    after = run[-1] + 1 if run else len(doc)
    if after < len(doc) and doc.joined[after] and doc.words[after] == "administration":
        suffix = " administration"

    chunks, current, k = [], [], 0
    while k < len(run):
        n = _title_length(doc, run, k)
        if n:
            title = " ".join(doc.norms[j] for j in run[k : k + n])
            if current:
                chunks.append(_Chunk(current, "civic" if title in CIVIC_TITLES else hint))
            current, hint, k = [], "person", k + n
        else:
            current.append(run[k])
            k += 1
    if current:
        chunks.append(_Chunk(current, hint, suffix))

    result = []
    for chunk in chunks:
        norms = [doc.norms[i] for i in chunk.words]
        # "Sessions and Rosenstein" and "… Fund and Sakura Electric" are two
        # names; "Centers for Disease Control and Prevention" is one.
        if "and" in norms and (
            not (any(n in ORG_WORDS for n in norms) or norms[0] in ORG_PREFIXES)
            or norms[norms.index("and") - 1] in ORG_WORDS
        ):
            parts, part = [], []
            for i in chunk.words:
                if doc.norms[i] == "and":
                    parts.append(part)
                    part = []
                else:
                    part.append(i)
            parts.append(part)
            result.extend(
                _Chunk(p, chunk.hint if n == 0 else None) for n, p in enumerate(parts) if p
            )
        else:
            result.append(chunk)
    for chunk in result:
        while chunk.words and (
            doc.norms[chunk.words[-1]] in CONNECTORS or doc.norms[chunk.words[-1]] in CALENDAR
        ):
            chunk.words.pop()
    return [c for c in result if c.words]


def _guess_kind(doc, chunk):
    norms = [doc.norms[i] for i in chunk.words]
    acronym = any(len(doc.words[i]) > 1 and doc.words[i].isupper() for i in chunk.words)
    if (
        chunk.suffix
        or any(n in ORG_WORDS for n in norms)
        or (norms[-1] == "united" and len(norms) > 1)  # Castleford United
        or norms[0] in ORG_PREFIXES
        or _is_newspaper(doc, chunk.words)
        or acronym
    ):
        return ORGANIZATION
    if norms[-1] in PLACE_WORDS or chunk.hint in ("place", "civic"):
        return PLACE
    if chunk.hint == "person":
        return PERSON
    if norms[0] in PLACE_PREFIXES:
        return PLACE
    return ORGANIZATION if len(norms) >= 4 else PERSON


def _surface(doc, words, suffix=""):
    name = doc.text[doc.starts[words[0]] : doc.ends[words[-1]]] + suffix
    return re.sub(r"['’]s$", "", name) if not suffix else name


class Tally:
    def __init__(self):
        self.found = {}  # key → [name, kind, count, first, leads]

    def add(self, key, name, kind, doc, i):
        entry = self.found.setdefault(key, [name, kind, 0, doc.starts[i], False])
        entry[2] += 1
        entry[4] = entry[4] or doc.leads(i)

    def candidates(self):
        out = [
            Candidate(name, kind, count, first, role(leads, count))
            for name, kind, count, first, leads in self.found.values()
        ]
        return sorted(out, key=lambda c: c.first)


def rule_candidates(doc, index, covered):
    """New candidates by the form of the words around them."""
    skip = set(covered)
    if doc.title_is_title_case():
        # In "Governor Signs Water Bill" capitals say nothing.
        skip.update(i for i in range(len(doc)) if doc.in_title(i))
    tally, singles = Tally(), []
    for run in _runs(doc, skip):
        for chunk in _chunks(doc, run):
            words = chunk.words
            if len(words) == 1 and not chunk.suffix:
                singles.append((words[0], chunk.hint))
                continue
            if all(len(doc.words[i]) == 1 for i in words):
                continue  # "U.S.": initials are aliases, not names
            name = _surface(doc, words, chunk.suffix)
            if index.knows(name):
                continue
            key = strip_the(name_key(name))
            tally.add(key, name, _guess_kind(doc, chunk), doc, words[0])

    # Single words: a short form of a name found above ("Sessions",
    # "Greenleaf"), an acronym, a place by its context, or a word the text
    # keeps capitalising mid-sentence.
    people, firsts = {}, {}
    for key, (_, kind, *_rest) in tally.found.items():
        words = key.split()
        if kind == PERSON:
            people.setdefault(words[-1], []).append(key)
        elif len(words) > 1:
            firsts.setdefault(words[0], []).append(key)
    rest = {}
    for i, hint in singles:
        norm, word = doc.norms[i], doc.words[i]
        owners = people.get(norm) or []
        if hint not in ("place", "civic"):  # "in Ohio" is not the Ohio Department of Health
            owners = owners or firsts.get(norm) or []
        if len(owners) == 1:
            entry = tally.found[owners[0]]
            entry[2] += 1
            entry[4] = entry[4] or doc.leads(i)
            continue
        if hint == "person" or norm in STOPWORDS or norm in CALENDAR or norm in DEMONYMS:
            continue
        if norm.endswith(DEMONYM_ENDINGS) or index.knows(word):
            continue
        if word.isupper() and len(word) > 1:
            if word not in ACRONYM_STOP and len(word) <= 6:
                tally.add(f" {norm} ", word, ORGANIZATION, doc, i)
            continue
        if norm in doc.lower_words:
            continue
        rest.setdefault(norm, []).append((i, hint))
    for occurrences in rest.values():
        hints = {hint for _, hint in occurrences}
        mid_sentence = [i for i, _ in occurrences if not doc.sentence_start[i]]
        if hints & {"place", "civic"}:
            kind = PLACE
        elif len(occurrences) >= 2 and mid_sentence:
            kind = ORGANIZATION
        else:
            continue
        i = occurrences[0][0]
        name = _surface(doc, [i])
        for j, _ in occurrences:
            tally.add(name_key(name), name, kind, doc, j)
    return tally.candidates()
