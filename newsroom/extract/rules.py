"""New candidates by rule: proper names that are not entities yet, found by
their form ("Rod Rosenstein", "… Department", "The … Times", "… administration",
"in El Paso"), each with a guessed kind.

The word lists the rules read live in data/*.txt, one word or phrase a line
("#" starts a comment); they are read when this module is imported, except
the two long ones — the gazetteer (data/places.txt) and the first names of
gender-guesser's dictionary — which are read on first use.
"""

import bisect
import functools
import itertools
import re
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

from .known import strip_the
from .text import ORGANIZATION, PERSON, PLACE, name_key, positions, role


def word_list(name):
    """The words of data/NAME.txt as a set."""
    text = files(__package__).joinpath("data", f"{name}.txt").read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return {line for line in lines if line and not line.startswith("#")}


@dataclass
class Candidate:
    """A proper name that is not an entity yet, with a guessed kind, and the
    other forms the text gives it ("FEMA" for "Federal Emergency Management
    Agency (FEMA)")."""

    name: str
    kind: str
    count: int
    first: int
    role: str
    aliases: list = field(default_factory=list)


# Words that start a sentence or a capitalised run but never a name.
STOPWORDS = word_list("stopwords")
CALENDAR = word_list("calendar")
# Lower-case words allowed inside a name: "Department of Justice"; and inside
# an organisation's: "Council on the Humanities".
CONNECTORS = {"of", "for", "and", "de", "del", "da", "di", "du", "van", "von", "der", "la"}
ORG_CONNECTORS = {"on", "the", "with"}
ALL_CONNECTORS = CONNECTORS | ORG_CONNECTORS
# Titles before a name; what follows is a person ("Attorney General Jeff Sessions").
TITLES = word_list("titles")
TITLE_STARTS = {title.split()[0] for title in TITLES}
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
# Capitalised words of official prose that name nothing alone ("Federal
# funding", "the Administration", "Tribal communities").
OFFICIAL_WORDS = word_list("official_words")
# Last words of the names of laws, events and plans: not people, organisations
# or places ("CHIPS and Science Act", "U.S.-Africa Leaders Summit").
EVENT_WORDS = word_list("event_words")
# Words that are in no person's name, and in no list of people.
NOT_IN_NAMES = frozenset(CONNECTORS | ORG_WORDS | OFFICIAL_WORDS)
NOT_IN_LISTS_OF_PEOPLE = frozenset(ALL_CONNECTORS | ORG_WORDS | OFFICIAL_WORDS)
# Organisations named by one word: "Congress".
INSTITUTIONS = word_list("institutions")
# "the counties of Merced, Sacramento, and Santa Cruz", "Apache and Navajo counties".
COUNTY_WORDS = {"county", "counties", "parish", "parishes"}
# Organisations a person's title names: "Director of the … Office of …".
OFFICE_WORDS = {"office", "department", "agency", "council", "committee", "commission",
                "bureau", "administration", "service", "board"}  # fmt: skip
# "Montgomery, Ala.", "Atlanta, GA": abbreviations of US states after a city
# and a comma, and the state each names.
STATES = dict(line.split(" = ") for line in word_list("state_abbreviations"))
STATE_NAMES = set(STATES.values()) - {"District of Columbia"}
# Heads of names that are places whatever follows: "State of Washington".
PLACE_HEADS = {"state", "commonwealth", "republic", "kingdom"}
# A dateline: a paragraph that starts with a place in capitals, then a comma
# (and a state, checked by the rule) or a dash.
DATELINE_RE = re.compile(r"^([A-Z][A-Z'’.]+(?: [A-Z][A-Z'’.]+)*)(?=,|\s*(--|-\s|–|—))", re.M)
LINE_BREAK_RE = re.compile("\n")
# "(D-IL)", "(R-Texas)", "(D-NY-14)": a member of Congress's party and state.
PARTY_RE = re.compile(r"\((?:D|R|I)-[A-Z][A-Za-z.]*(?:[ -][A-Z0-9][A-Za-z0-9.]*)?\)")
# An acronym in brackets after the name it abbreviates.
ACRONYM_AFTER_RE = re.compile(r"\s*\((\w{2,8})\)")
# Names in e-mail and web addresses are not names: "FEMA-NEWS-DESK@FEMA.DHS.GOV".
ADDRESS_MARKS = ("@", "://", "www.", ".gov", ".com", ".org", ".net", ".edu")
ADDRESS_RE = re.compile(r"\S+@\S+|(?:https?://|www\.)\S+|\b\S+\.(?:gov|com|org|net|edu)\b\S*", re.I)


@functools.cache
def first_names():
    """First names, lower case, from gender-guesser's dictionary (read once).

    Its data file is read directly: the detector builds a far larger table
    than the names alone.
    """
    # Found, not imported: only the data file (GNU FDL) is used, not the code.
    path = Path(find_spec("gender_guesser").origin).parent / "data" / "nam_dict.txt"
    names = set()
    common = re.compile("[2-9A-D]").search
    with path.open(encoding="iso8859-1") as lines:
        for line in lines:
            # Columns 30 on: how common the name is in each country, " " or 1-D.
            if line[0] != "#" and common(line, 30):
                name = line[3:29].strip()
                if name.isalpha():
                    names.add(name.casefold())
    return frozenset(names - STOPWORDS - CALENDAR - {"the"})


@functools.cache
def places():
    """Places as name keys: countries, US states and counties, cities
    (data/places.txt, from GeoNames) and regions (data/regions.txt). Read on
    first use, as it is 11,000 names."""
    return frozenset(name_key(place) for place in word_list("places") | word_list("regions"))


@dataclass(slots=True)
class _Chunk:
    words: list  # word indexes
    hint: str | None = None  # "person", "place" or "civic" (before a civic title)
    suffix: str = ""  # " administration"
    after_title: bool = False  # the words follow a person's title
    surname: int | None = None  # "Evelyn and Joseph Djoumessi": Evelyn's, word index


def _title_length(doc, words, k):
    if doc.norms[words[k]] not in TITLE_STARTS:
        return 0
    for n in (5, 4, 3, 2, 1):
        if k + n <= len(words) and " ".join(doc.norms[j] for j in words[k : k + n]) in TITLES:
            # "the President’s Committee", "Attorney’s Office": not a title.
            return 0 if _possessive(doc.words[words[k + n - 1]]) else n
    return 0


def _is_newspaper(doc, words):
    return doc.norms[words[0]] == "the" and doc.norms[words[-1]] in NEWSPAPER_WORDS


def _gap(doc, i):
    """The characters between word i-1 and word i."""
    return doc.gaps[i] if i else ""


POSSESSIVE = ("'s", "’s")


def _possessive(word):
    return word.endswith(POSSESSIVE) and len(word) > 2


def _context(doc, i):
    """ "place" or "person" from the lower-case words in front of word i."""
    joined, norms = doc.joined, doc.norms
    if not i or not joined[i]:
        return None
    j = i - 1
    if norms[j] in {"the", "a", "an"}:
        i, j = j, j - 1
        if j < 0 or not joined[i]:
            return None
    if doc.words[j] not in doc.lower_words:
        return None
    if norms[j] in PLACE_PREPOSITIONS:
        return "place"
    if norms[j] in ROLE_NOUNS:
        return "person"
    return None


def _runs(doc, skip):
    """Maximal runs of capitalised words (and connectors between them).

    A run starts at a capitalised word, so only those are visited, and each
    run is followed word by word from there.
    """
    words, norms, joined = doc.words, doc.norms, doc.joined
    n, taken = len(words), 0  # the words before `taken` are in a run already
    capitalised = doc.capitalised_words
    for start in itertools.compress(range(n), map(capitalised.__contains__, words)):
        if start < taken or start in skip or words[start] == "I":
            continue
        run, i = [start], start + 1
        while i < n and joined[i] and i not in skip:
            word, norm = words[i], norms[i]
            if not (
                (word in capitalised and word != "I")
                or norm in CONNECTORS
                # "National Council on the Humanities", "Department of the Interior"
                or (norm in ORG_CONNECTORS and _names_org(doc, run))
                # "University of Texas at Austin"
                or (norm == "at" and norms[run[0]] == "university")
            ):
                break
            # (The run's last word is word i-1.)
            previous = words[i - 1]
            if (
                # "Biden’s Investing in America": a possessive ends a name,
                # unless an organisation's name goes on ("Attorney’s Office").
                (previous.endswith(POSSESSIVE) and len(previous) > 2 and norm not in ORG_WORDS)
                # "Gerard M. Stolar of FEMA": a person is not "of" an acronym.
                or (norm == "of" and i + 1 < n and words[i + 1].isupper())
            ):
                break
            run.append(i)
            i += 1
        taken = i
        yield run


def _run_on_people(doc, words):
    """The people of a list that lost its line breaks: "Marc Andreessen Sergey
    Brin Safra Catz" → each name, cut where a first name follows a name of two
    or three words; or [] when the words are not such a list."""
    if len(words) < 4:
        return []
    names = first_names()
    norms = [doc.norms[i] for i in words]
    if norms[0] not in names or not NOT_IN_LISTS_OF_PEOPLE.isdisjoint(norms):
        return []
    people, person = [], []
    for i, norm in zip(words, norms, strict=True):
        if person and len(person) >= 2 and norm in names:
            people.append(person)
            person = []
        person.append(i)
    people.append(person)
    if len(people) < 2 or not all(2 <= len(p) <= 4 for p in people):
        return []
    # Four words with no first name inside are two people: "Sergey Brin Safra Catz".
    return [half for p in people for half in ([p[:2], p[2:]] if len(p) == 4 else [p])]


def _names_org(doc, run):
    norms = [doc.norms[i] for i in run]
    return bool(norms) and (norms[0] in ORG_PREFIXES or not ORG_WORDS.isdisjoint(norms))


def _person_start(doc, words):
    """Where a person's name starts in the words after a title: at the first
    first name from which the rest is a short run of names ("Secretary of
    Housing and Urban Development Marcia Fudge" → "Marcia Fudge"), or None."""
    norms = [doc.norms[j] for j in words]

    def plain(rest):
        return len(rest) <= 4 and NOT_IN_NAMES.isdisjoint(rest)

    if words and plain(norms):
        return 0  # "Attorney General Merrick Garland": all of it
    names = first_names()
    for f, norm in enumerate(norms):
        if norm in names and plain(norms[f:]):
            return f
    return None


def _titled(doc, words):
    """Split the words after a title into the office its holder heads, if the
    title names one ("Director of the White House Office of …"), and the
    holder's name."""
    while words and doc.norms[words[-1]] in ALL_CONNECTORS:
        words = words[:-1]  # "President Weah for …"
    f = _person_start(doc, words)
    if f is None:
        cut = next((k for k, i in enumerate(words) if doc.norms[i] in ALL_CONNECTORS), None)
        if cut is None:
            return None, words
        if cut and _person_start(doc, words[:cut]) == 0 and doc.norms[words[0]] in first_names():
            # "U.S. Attorney James R. Klindt for the Middle District of Florida":
            # the holder, and the office the title names.
            office = words[cut:]
            while office and doc.norms[office[0]] in ALL_CONNECTORS:
                office = office[1:]
            return office or None, words[:cut]
        return None, []  # "Secretary of Education"
    office = words[:f]
    while office and doc.norms[office[0]] in CONNECTORS | {"the"}:
        office = office[1:]
    if office and any(doc.norms[i] in OFFICE_WORDS for i in office):
        return office, words[f:]
    return None, words[f:]


def _before_title(doc, words):
    """Split the words between two titles at their last "and" when a person's
    name stands before it and none after it: (the holder's words, the words
    before the next title)."""
    ands = [k for k, i in enumerate(words) if doc.norms[i] == "and"]
    if not ands or ands[-1] in (0, len(words) - 1):
        return words, []
    k = ands[-1]
    names = first_names()
    after = [doc.norms[i] for i in words[k + 1 :]]
    # A person after the "and" has a first name and a surname at least.
    person_after = len(after) >= 2 and any(n in names for n in after[:-1])
    if not person_after and _person_start(doc, words[:k]) is not None:
        return words[:k], words[k + 1 :]
    return words, []


def _holder(doc, words, in_title_case):
    """Chunks for the words after a title: the holder, and the office the title
    names. In a title-case headline the words are cut later."""
    office, holder = _titled(doc, words) if not in_title_case else (None, words)
    chunks = [_Chunk(office)] if office else []
    if holder:
        chunks.append(_Chunk(holder, "person", after_title=True))
    return chunks


def _chunks(doc, run, in_title_case=False, lower=None):
    """Split a capitalised run into name chunks, dropping sentence-initial
    noise ("However", "In May", "The") and titles."""
    first, after_preposition = run[0], False
    norm_of = doc.norms
    norms = norm_of[first : run[-1] + 1]
    if len(norms) != len(run):
        norms = [norm_of[i] for i in run]  # (not consecutive words)
    if (
        len(run) < 4
        and not doc.sentence_start[first]
        and norms[0] not in STOPWORDS
        and norms[0] not in CALENDAR
        and norms[-1] not in ALL_CONNECTORS
        and norms[-1] not in CALENDAR
        and "and" not in norms
        and TITLE_STARTS.isdisjoint(norms)
    ):
        # The common case, and what the rest gives for it: no noise before
        # the name, no title in it, no "and" to cut it at, nothing to trim.
        return [_Chunk(list(run), _context(doc, first), _suffix(doc, run))]
    lower = doc.lower_words if lower is None else lower
    # (Not _is_newspaper(doc, run): "The … Times" keeps its "The".)
    while run and not (norm_of[run[0]] == "the" and norm_of[run[-1]] in NEWSPAPER_WORDS):
        i, norm = run[0], norm_of[run[0]]
        noise = (
            norm in STOPWORDS
            or norm in CALENDAR
            # A sentence's first word, which the text also writes in lower case.
            or (
                doc.sentence_start[i]
                and (
                    norm in lower
                    # "Shares of Greenleaf": a sentence-initial noun and its "of".
                    or (
                        len(run) > 2
                        and norm_of[run[1]] in CONNECTORS
                        and norm not in ORG_PREFIXES
                        # "Evelyn and Joseph Djoumessi"
                        and not (norm_of[run[1]] == "and" and norm in first_names())
                        # "Secretary of Homeland Security Alejandro N. Mayorkas"
                        and not _title_length(doc, run, 0)
                    )
                )
            )
        )
        if not noise:
            break
        if norm in PLACE_PREPOSITIONS:
            after_preposition = True
        run = run[1:]
        while run and doc.norms[run[0]] in CONNECTORS:
            run = run[1:]
    if not run:
        return []  # "However", "In May": noise only
    hint = "place" if after_preposition else _context(doc, first)
    suffix = _suffix(doc, run)

    chunks, current, k, titled = [], [], 0, False
    if TITLE_STARTS.isdisjoint(map(norm_of.__getitem__, run)):
        current, k = list(run), len(run)  # no title in the run: all of it
    while k < len(run):
        n = _title_length(doc, run, k)
        if n:
            title = " ".join(doc.norms[j] for j in run[k : k + n])
            before = []
            if current and titled:
                # "President Biden and Vice President Harris"; "Secretary …
                # Alejandro N. Mayorkas and FEMA Administrator …": the holder,
                # then what stands before the next title.
                current, before = _before_title(doc, current)
                chunks += _holder(doc, current, in_title_case)
                current = before
            if current and (before or not titled):
                # "Justice Department Inspector General …", "Mesa Mayor …"; other
                # words before a title are part of it ("National Climate Advisor").
                chunk = _Chunk(
                    current, "civic" if title in CIVIC_TITLES else None if before else hint
                )
                if title in CIVIC_TITLES or _guess_kind(doc, chunk) != PERSON:
                    chunks.append(chunk)
            current, hint, k, titled = [], "person", k + n, True
        else:
            current.append(run[k])
            k += 1
    if current and titled:
        chunks += _holder(doc, current, in_title_case)
    elif current:
        # "… Office of Intergovernmental Affairs Julie Chavez Rodriguez": an
        # organisation, then the person who speaks for it.
        # (Shorter than four words, it is neither, and one name.)
        f = _person_start(doc, current) if len(current) >= 4 else None
        people = _run_on_people(doc, current) if len(current) >= 4 else []
        if f and f >= 2 and len(current) - f >= 2 and _names_org(doc, current[:f]):
            chunks += [_Chunk(current[:f]), _Chunk(current[f:], "person")]
        elif people:
            chunks += [_Chunk(person, "person") for person in people]
        else:
            chunks.append(_Chunk(current, hint, suffix))

    result = []
    for chunk in chunks:
        # "Sessions and Rosenstein" and "… Fund and Sakura Electric" are two
        # names; "Centers for Disease Control and Prevention" is one.
        if "and" not in map(norm_of.__getitem__, chunk.words):
            result.append(chunk)
            continue
        norms = [norm_of[i] for i in chunk.words]
        org = any(n in ORG_WORDS for n in norms) or norms[0] in ORG_PREFIXES
        cuts = {
            k
            for k, n in enumerate(norms)
            if n == "and"
            and k > 0
            and (
                not org
                or norms[k - 1] in ORG_WORDS
                # "… Colville Reservation and the Pine Ridge Reservation"
                or norms[k + 1 : k + 2] == ["the"]
            )
        }
        if cuts:
            parts, part = [], []
            for k, i in enumerate(chunk.words):
                if k in cuts:
                    parts.append(part)
                    part = []
                elif part or doc.norms[i] != "the":
                    part.append(i)
            parts.append(part)
            split = [_Chunk(p, chunk.hint if n == 0 else None) for n, p in enumerate(parts) if p]
            names = first_names()
            if (
                len(parts) == 2
                and len(parts[0]) == 1
                and 2 <= len(parts[1]) <= 3
                and doc.norms[parts[0][0]] in names
                and doc.norms[parts[1][0]] in names
            ):
                # "Evelyn and Joseph Djoumessi": two people of one surname.
                split[0].hint, split[0].surname = "person", parts[1][-1]
            result.extend(split)
        else:
            result.append(chunk)
    for chunk in result:
        words = chunk.words
        while words and (norm_of[words[-1]] in ALL_CONNECTORS or norm_of[words[-1]] in CALENDAR):
            words.pop()
    return [c for c in result if c.words]


def _suffix(doc, run):
    """ " administration" when the word after the run is: "Trump administration"."""
    after = run[-1] + 1
    if after < len(doc.words) and doc.joined[after] and doc.words[after] == "administration":
        return " administration"
    return ""


def _guess_kind(doc, chunk):
    ws = chunk.words
    norms = doc.norms[ws[0] : ws[-1] + 1]
    if len(norms) != len(ws):
        norms = [doc.norms[i] for i in ws]  # (not consecutive words)
    if not chunk.suffix and f" {' '.join(norms)} " in places():
        return PLACE
    if len(norms) > 2 and norms[0] in PLACE_HEADS and norms[1] == "of":
        return PLACE  # "State of Washington", "Republic of Liberia"
    words = doc.words
    if (
        chunk.suffix
        or not ORG_WORDS.isdisjoint(norms)
        or (norms[-1] == "united" and len(norms) > 1)  # Castleford United
        or norms[0] in ORG_PREFIXES
        or (norms[0] == "the" and norms[-1] in NEWSPAPER_WORDS)
        # "Eastern District of California": a federal court's district.
        or ("district" in norms[:-1] and "of" in norms)
        # "Miami Hurricanes": a place and a plural is a team.
        or (
            norms[-1].endswith("s")
            and len(norms) > 1
            and norms[-1] not in PLACE_WORDS
            and " " + " ".join(norms[:-1]) + " " in places()
        )
        # an acronym (not an initial)
        or (
            any(map(str.isupper, map(words.__getitem__, ws)))
            and any(len(words[i]) > 1 and words[i].isupper() for i in ws)
        )
    ):
        return ORGANIZATION
    if norms[-1] in PLACE_WORDS or chunk.hint in ("place", "civic"):
        return PLACE
    if chunk.hint == "person":
        return PERSON
    if norms[0] in PLACE_PREFIXES:
        return PLACE
    if norms[0] in first_names() and len(norms) <= 4:
        return PERSON
    return ORGANIZATION if len(norms) >= 4 else PERSON


def _surface(doc, words, suffix=""):
    name = doc.text[doc.starts[words[0]] : doc.ends[words[-1]]] + suffix
    # A name ends with a word, never a line break, so "$" is its end.
    return name[:-2] if not suffix and name.endswith(("'s", "’s")) else name


class Tally:
    def __init__(self):
        self.found = {}  # key → [name, kind, count, first, leads, aliases]

    def add(self, key, name, kind, doc, i):
        entry = self.found.get(key)
        if entry is None:
            entry = self.found[key] = [name, kind, 0, doc.starts[i], False, []]
        entry[2] += 1
        if not entry[4]:
            # doc.leads(i): in the title or the first paragraph.
            entry[4] = doc.starts[i] < doc.title_end or doc.paragraph[i] == doc.first_paragraph
        return entry

    def candidates(self):
        out = [
            Candidate(name, kind, count, first, role(leads, count), aliases)
            for name, kind, count, first, leads, aliases in self.found.values()
        ]
        return sorted(out, key=lambda c: c.first)


def _unreadable(doc):
    """Words that are no part of prose: e-mail and web addresses, a member of
    Congress's party and state ("(D-IL)"), and lines in capitals ("FOR
    FURTHER INFORMATION MEDIA SHOULD CONTACT …")."""
    text = doc.text
    spans = []
    if any(mark in text for mark in ADDRESS_MARKS):
        spans = [m.span() for m in ADDRESS_RE.finditer(text)]
    if "-" in text:
        spans += [m.span() for m in PARTY_RE.finditer(text)]
    start = 0
    for line in text.split("\n"):
        if line == line.upper() and sum(map(str.isalpha, line)) > 20:
            spans.append((start, start + len(line)))
        start += len(line) + 1
    words = set()
    for a, b in spans:
        words.update(range(bisect.bisect_left(doc.starts, a), bisect.bisect_left(doc.starts, b)))
    return words


def _list_items(doc, i, step, skip):
    """The capitalised items of a list that starts next to word i and goes
    forward (step 1) or backward (step -1): "Merced, Sacramento, and Santa
    Cruz". Each item is a list of word indexes, in text order."""
    items, item, j = [], [], i + step
    n = len(doc.words)
    while 0 <= j < n and j not in skip:
        # The gap between word j and its neighbour towards word i.
        gap = (_gap(doc, j) if step == 1 else _gap(doc, j + 1)).strip()
        if gap not in ("", ","):
            j = -1  # the list ends at punctuation: its last item is whole
            break
        if gap == "," and item:
            items.append(item)
            item = []
        if doc.norms[j] == "and":
            if item:
                items.append(item)
                item = []
        elif doc.capitalised(j) and doc.norms[j] not in COUNTY_WORDS:
            item.append(j)
        else:
            break
        j += step
    if item and (step == -1 or not 0 <= j < n or not doc.capitalised(j)):
        items.append(item)
    items = [sorted(item) for item in items]
    if step == -1:
        items.reverse()
    # A long item is a sentence's words, not a county's name: the list ends there.
    short = []
    for item in items if step == 1 else reversed(items):
        if len(item) > 3:
            break
        short.append(item)
    return short if step == 1 else short[::-1]


def _county_lists(doc, skip):
    """Places named in lists of counties: each item and its county word."""
    found = []
    present = COUNTY_WORDS & doc.distinct_norms
    if not present:
        return found
    for i in positions(doc.norms, present):
        norm = doc.norms[i]
        singular = "County" if norm.startswith("count") else "Parish"
        of = i + 1 < len(doc.words) and doc.norms[i + 1] == "of"
        if norm in ("county", "parish") and not (of and doc.words[i].islower()):
            continue  # "Maricopa County" is a name like any other; "the county of Okanogan"
        if of:
            items = _list_items(doc, i + 1, 1, skip)
        elif i and doc.capitalised(i - 1):
            items = _list_items(doc, i, -1, skip)
            if items and items[0][0] and doc.words[items[0][0] - 1].isdigit():
                continue  # "10 Georgia counties": a state's counties, not a list
        else:
            continue
        found += [(item, singular) for item in items]
    return found


def _acronym_after(doc, words):
    """The acronym a name is given in brackets right after it, when its
    letters are the initials of the name's capitalised words."""
    end = doc.ends[words[-1]]
    after = doc.text[end : end + 12]
    m = "(" in after and ACRONYM_AFTER_RE.match(after)
    if not m or not m.group(1).isupper():
        return None
    initials = "".join(doc.words[i][0] for i in words if doc.words[i][0].isupper())
    return m.group(1) if initials.upper() == m.group(1) else None


def _common_acronym(doc, i):
    """Is word i an acronym in brackets after the lower-case words it
    abbreviates: "video relay service (VRS)"?"""
    word = doc.words[i]
    if not _gap(doc, i).endswith("(") or i < len(word):
        return False
    before = doc.words[i - len(word) : i]
    return all(w.islower() for w in before) and "".join(w[0] for w in before) == word.lower()


def _in_body(doc, i):
    """Does the body name word i of the title too?"""
    return re.search(rf"\b{re.escape(doc.words[i])}\b", doc.text[doc.title_end :]) is not None


def _followed_by_lower(doc, i):
    return i + 1 < len(doc.words) and doc.joined[i + 1] and doc.words[i + 1].islower()


def _numbered(doc, i):
    """Is word i (not the last) followed by a number, as designations are
    ("Expedition 70", "Crew-7", "Gate 9")? A year is no designation ("World
    Games Berlin 2023")."""
    if not doc.words[i + 1][0].isdigit() or not doc.joined[i + 1] or not doc.words[i + 1].isdigit():
        return False
    return not re.fullmatch(r"(19|20)\d\d", doc.words[i + 1])


def _state_after(doc, i):
    """The state that word i abbreviates, and how many words the abbreviation
    takes, when it follows a capitalised word and a comma ("Montgomery, Ala.",
    "Atlanta, GA", "Raleigh, N.C."); else (None, 0)."""
    if not (0 < i < len(doc.words) and doc.after_comma[i] and doc.capitalised(i - 1)):
        return None, 0
    word, after = doc.words[i], doc.text[doc.ends[i] : doc.ends[i] + 1]
    if len(word) == 2 and word.isupper() and word in STATES:
        return STATES[word], 1
    if after == "." and f"{word}." in STATES:
        return STATES[f"{word}."], 1
    if len(word) == 1 and after == "." and i + 1 < len(doc.words) and len(doc.words[i + 1]) == 1:
        pair = f"{word}.{doc.words[i + 1]}."
        if pair in STATES and doc.text[doc.ends[i + 1] : doc.ends[i + 1] + 1] == ".":
            return STATES[pair], 2
    return None, 0


def _state_name_at(doc, i):
    """Does a US state's name start at word i ("Kentucky", "New Mexico")?"""
    for n in (1, 2):
        if " ".join(doc.words[i : i + n]) in STATE_NAMES and (
            i + n >= len(doc.words) or not doc.capitalised(i + n) or not doc.joined[i + n]
        ):
            return True
    return False


def _dc_after(doc, i):
    """Is word i followed by ", D.C."?"""
    return (
        i + 1 < len(doc.words)
        and doc.words[i + 1] == "D"
        and _state_after(doc, i + 1)[0] == "District of Columbia"
    )


def _located(doc, skip):
    """Words that name places by where they stand: the city before a state's
    abbreviation (the abbreviation's words are skipped, and the states written
    the Associated Press's way returned as (word, state) to be proposed: a postal
    code names no entity of its own), an all-capitals dateline at a paragraph's
    start ("ATLANTA, Ga. --", "WASHINGTON—"), and the items of a list after
    "in", "at" … when one of them is in the gazetteer ("in Ahoskie, Bayboro,
    Beaufort and Windsor")."""
    at_place, states, datelines = set(), [], []
    n_words = len(doc.words)
    capitalised = doc.capitalised_words
    for i in itertools.compress(range(n_words), doc.after_comma):
        if doc.words[i - 1] not in capitalised:
            continue  # (both need a capitalised word before the comma)
        state, n = _state_after(doc, i)
        if state:
            at_place.add(i - 1)
            skip.update(range(i, i + n))
            if doc.text[doc.ends[i] : doc.ends[i] + 1] == "." and state != "District of Columbia":
                states.append((i, state))  # "Ala.", "N.C.": not a postal code
        elif doc.capitalised(i - 1) and _state_name_at(doc, i):
            at_place.add(i - 1)  # "Mayfield, Kentucky"
    # A dateline is at a line's start and within the line: look only there.
    line_starts = [0, *(m.end() for m in LINE_BREAK_RE.finditer(doc.text))]
    for m in filter(None, map(DATELINE_RE.match, itertools.repeat(doc.text), line_starts)):
        i = bisect.bisect_left(doc.starts, m.start())
        j = bisect.bisect_left(doc.starts, m.end())
        # "ATLANTA, Ga. --", "WASHINGTON, D.C. –", "WASHINGTON—"; not "FEMA, the …"
        if m.group(2) or _state_after(doc, j)[0]:
            datelines.append(list(range(i, j)))
            skip.update(range(i, j))
    for i in positions(doc.words, PLACE_PREPOSITIONS & doc.lower_words):
        if i + 1 == n_words or doc.words[i + 1] not in capitalised:
            continue
        items = _list_items(doc, i, 1, skip)
        if len(items) >= 2 and any(name_key(_surface(doc, it)) in places() for it in items):
            at_place.update(item[0] for item in items)
    return at_place, states, datelines


def rule_candidates(doc, index, covered):
    """New candidates by the form of the words around them."""
    unreadable = _unreadable(doc)
    skip = set(covered) | unreadable
    # Words in lower case in the prose: "faith" in "faith.d.mckie@nasa.gov"
    # does not make "Faith McKie" a sentence's common first word.
    lower = doc.lower_words
    if any(doc.words[i].islower() for i in unreadable):
        lower = {w for i, w in enumerate(doc.words) if w.islower() and i not in unreadable}
    # In "Governor Signs Water Bill" capitals say little: only a name after a
    # title or a known place counts.
    title_case = doc.title_is_title_case()
    tally, singles, acronyms, defined = Tally(), [], {}, set()

    for item, county in _county_lists(doc, skip):
        name = _surface(doc, item)
        if doc.norms[item[-1]] not in COUNTY_WORDS:
            name = f"{name} {county}"
        if not index.knows(name) and not index.knows(_surface(doc, item)):
            tally.add(strip_the(name_key(name)), name, PLACE, doc, item[0])
        skip.update(item)

    at_place, states, datelines = _located(doc, skip)
    for i, state in states:
        if not index.knows(state):
            tally.add(strip_the(name_key(state)), state, PLACE, doc, i)
    for words in datelines:
        name = " ".join(doc.words[i].title() for i in words)
        if _dc_after(doc, words[-1]):
            name += ", D.C."
        if not index.knows(name):
            tally.add(strip_the(name_key(name)), name, PLACE, doc, words[0])

    text, starts, ends = doc.text, doc.starts, doc.ends
    dwords, norms, sentence_start = doc.words, doc.norms, doc.sentence_start
    last_word = len(dwords) - 1
    for run in _runs(doc, skip):
        first = run[0]
        if len(run) == 1:
            # One word that opens no name ("However", "Tuesday", a sentence's
            # first word that the text also writes in lower case): _chunks
            # would drop it.
            norm = norms[first]
            if norm != "the" and (
                norm in STOPWORDS or norm in CALENDAR or (sentence_start[first] and norm in lower)
            ):
                continue
        in_title_case = title_case and doc.in_title(first)
        for chunk in _chunks(doc, run, in_title_case, lower):
            words = chunk.words
            while (
                words
                and words[-1] < last_word
                and dwords[words[-1] + 1][0].isdigit()
                and _numbered(doc, words[-1])
            ):
                words.pop()  # "Expedition 70", "SpaceX Crew-7"
            if not words:
                continue
            if (
                at_place
                and (words[0] in at_place or words[-1] in at_place)
                and not _names_org(doc, words)
            ):
                chunk.hint = "place"
            if in_title_case:
                if chunk.after_title and len(words) > 1:
                    # "President Joe Biden Congratulating …": a first name and
                    # one more word, initials and hyphens aside.
                    n = 2 if doc.norms[words[0]] in first_names() else 1
                    if len(words) == 2 and _followed_by_lower(doc, words[-1]):
                        n = 2  # "Advisor Lael Brainard on Today’s …"
                    while n < len(words) and (
                        _gap(doc, words[n]) == "-" or len(doc.words[words[n - 1]]) == 1
                    ):
                        n += 1  # "Karine Jean-Pierre", "Joseph R. Biden"
                    words = chunk.words = words[:n]
                if chunk.after_title and len(words) == 1 and not _in_body(doc, words[0]):
                    continue  # "President Declares Disaster …": a verb, not a name
                if not chunk.after_title and name_key(_surface(doc, words)) not in places():
                    continue
            if norms[words[-1]] in EVENT_WORDS and not _names_org(doc, words[:-1]):
                continue  # "U.S.-Africa Leaders Summit", "CHIPS and Science Act"
            if chunk.surname is not None:
                name = f"{_surface(doc, words)} {doc.words[chunk.surname]}"
                tally.add(strip_the(name_key(name)), name, PERSON, doc, words[0])
                continue
            suffix = chunk.suffix
            if len(words) == 1 and not suffix:
                singles.append((words[0], chunk.hint))
                continue
            a, b = words[0], words[-1]
            if len(dwords[a]) == 1 and all(len(dwords[i]) == 1 for i in words):
                continue  # "U.S.": initials are aliases, not names
            # The name is _surface(doc, words, suffix), and ", D.C." after it
            # when the text says so (_dc_after).
            name = text[starts[a] : ends[b]]
            as_written = True  # the name is words a to b as the text has them
            if suffix:
                name += suffix
            elif name.endswith(POSSESSIVE):
                name, as_written = name[:-2], False
            dc = b < last_word and dwords[b + 1] == "D" and _dc_after(doc, b)
            if dc:
                name += ", D.C."
            if as_written and b - a + 1 == len(words):
                # name_key(name), from the words' norms: the name's words are
                # those words (and the suffix's, and "D", "C").
                key = " ".join(norms[a : b + 1])
                if suffix:
                    key += suffix  # " administration": one lower-case word
                if dc:
                    key += " d c"
                key = f" {key} "
            else:
                key = name_key(name)
            if index.knows_key(key):
                continue
            key = strip_the(key)
            entry = tally.add(key, name, _guess_kind(doc, chunk), doc, a)
            # (_acronym_after looks for the bracket in the next 12 characters.)
            acronym = "(" in text[ends[b] : ends[b] + 12] and _acronym_after(doc, words)
            if acronym and not index.knows(acronym):
                acronyms[acronym.casefold()] = key
                defined.add(b + 1)  # the acronym in brackets: the same mention
                if acronym not in entry[5]:
                    entry[5].append(acronym)

    # Single words: a short form of a name found above ("Sessions",
    # "Greenleaf", "FEMA"), an acronym, a surname after a title, a place by
    # its context or the gazetteer, or a word the text keeps capitalising
    # mid-sentence.
    people, firsts = {}, {}
    for key, entry in tally.found.items():
        words = key.split()
        if entry[1] == PERSON:
            people.setdefault(words[-1], []).append(key)
        elif len(words) > 1:
            firsts.setdefault(words[0], []).append(key)
    rest = {}
    for i, hint in singles:
        norm, word = doc.norms[i], doc.words[i]
        owners = people.get(norm) or []
        # "in Ohio" is not the Ohio Department of Health; "President Biden" is
        # not the Biden-Harris administration.
        if hint not in ("place", "civic", "person") and not word.isupper():
            # "NASA" is not the "NASA Marshall Activities Building".
            owners = owners or firsts.get(norm) or []
        if i in defined:
            continue
        if word.isupper() and norm in acronyms:
            owners = [acronyms[norm]]
        if len(owners) == 1:
            entry = tally.found[owners[0]]
            entry[2] += 1
            entry[4] = entry[4] or doc.leads(i)
            continue
        if norm in STOPWORDS or norm in CALENDAR or index.knows(word):
            continue
        if hint == "person" and norm not in OFFICIAL_WORDS:
            # "President Biden", "Governor DeSantis’ law", "Prime Minister Albanese".
            tally.add(f" {norm} ", _surface(doc, [i]), PERSON, doc, i)
            people.setdefault(norm, []).append(f" {norm} ")  # "Biden’s plan" later on
            continue
        if norm in DEMONYMS or norm in OFFICIAL_WORDS:
            continue
        if norm.endswith(DEMONYM_ENDINGS) and f" {norm} " not in places():
            continue
        if norm in INSTITUTIONS and not doc.sentence_start[i]:
            tally.add(f" {norm} ", _surface(doc, [i]), ORGANIZATION, doc, i)
            continue
        if f" {norm} " in places():
            tally.add(f" {norm} ", _surface(doc, [i]), PLACE, doc, i)
            continue
        if word.isupper() and len(word) > 1:
            if word not in ACRONYM_STOP and len(word) <= 6 and not _common_acronym(doc, i):
                tally.add(f" {norm} ", word, ORGANIZATION, doc, i)
            continue
        if norm in lower:
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
