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
"""

import functools
import html
import re
import threading
import unicodedata
from dataclasses import dataclass, field

import ahocorasick
from django.conf import settings
from django.db.models import Count, Max

from .models import ArticleEntity, Entity

ABOUT = ArticleEntity.Role.ABOUT.value
MENTIONS = ArticleEntity.Role.MENTIONS.value
PERSON = Entity.Kind.PERSON.value
ORGANIZATION = Entity.Kind.ORGANIZATION.value
PLACE = Entity.Kind.PLACE.value

# Mentioned this often, an entity is what the article is about.
ABOUT_COUNT = 3


@dataclass
class Known:
    """An Entity the text names; `first` is an offset in Extraction.text."""

    id: int
    name: str
    kind: str
    count: int
    first: int
    role: str


@dataclass
class Candidate:
    """A proper name that is not an entity yet, with a guessed kind."""

    name: str
    kind: str
    count: int
    first: int
    role: str


@dataclass
class Extraction:
    text: str  # the title, a blank line, the body as plain text
    known: list[Known] = field(default_factory=list)
    new: list[Candidate] = field(default_factory=list)


# --- words ------------------------------------------------------------------

WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
# What may stand between two words of one name: spaces, a hyphen (Coca-Cola),
# a slash (SEO/BirdLife), an ampersand (AT&T) or a plural possessive.
JOINING_GAP_RE = re.compile(r"[ \t\xa0]+|[-/&]|[ \t\xa0]+&[ \t\xa0]+|['’][ \t\xa0]+")
ABBREVIATION_GAP_RE = re.compile(r"\.[ \t\xa0]*")
ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "sen", "rep", "gov", "gen", "lt", "col", "sgt",
    "capt", "jr", "sr", "prof", "mt", "ft", "inc", "co", "corp", "ltd", "no", "vs",
}  # fmt: skip
# The site's subscribe footer, which seeds copied from the old site end with.
FOOTER_RE = re.compile(
    r"\n\s*Discover more from [^\n]*\n\s*Subscribe to get the latest posts[^\n]*\s*\Z"
)
BLOCK_END_RE = re.compile(r"<br\s*/?>|</(?:p|div|h\d|li|blockquote|tr|figcaption)\s*>", re.I)
TAG_RE = re.compile(r"<[^>]*>")


def plain_text(body):
    """The body without tags, one paragraph a line."""
    if "<" in body:
        body = TAG_RE.sub("", BLOCK_END_RE.sub("\n", body))
    return FOOTER_RE.sub("", html.unescape(body).replace("\r", "")).strip()


def normalize_word(word):
    """Lower case, no accents, no possessive: "Horowitz’s" → "horowitz"."""
    word = unicodedata.normalize("NFKD", word.replace("’", "'"))
    word = "".join(c for c in word if not unicodedata.combining(c)).casefold()
    return word[:-2] if word.endswith("'s") and len(word) > 2 else word


def name_key(name):
    """The automaton key of a name: its normalised words between spaces."""
    words = [normalize_word(w) for w in WORD_RE.findall(name)]
    return " " + " ".join(words) + " " if words else ""


class Document:
    """The words of a title and body, with what the gaps between them mean."""

    def __init__(self, title, body):
        title = " ".join(title.split())
        body = plain_text(body)
        if title and body.startswith(title):
            title = ""  # the loader uses the first sentence as the title
        self.text = f"{title}\n\n{body}" if title else body
        self.title_end = len(title)
        self.words, self.starts, self.ends, self.norms = [], [], [], []
        self.joined = []  # word i continues the phrase of word i-1
        self.sentence_start = []
        self.paragraph = []  # paragraph number; the title is paragraph 0
        self.first_paragraph = 0 if not title else 1
        paragraph, prev_end, prev_word = 0, 0, ""
        for m in WORD_RE.finditer(self.text):
            word, gap = m.group(), self.text[prev_end : m.start()]
            if not self.words:
                joined, starts = False, True
            elif "\n" in gap:
                paragraph += 1
                joined, starts = False, True
            elif JOINING_GAP_RE.fullmatch(gap) or (
                ABBREVIATION_GAP_RE.fullmatch(gap)
                and (len(prev_word) == 1 or prev_word.lower() in ABBREVIATIONS)
            ):
                joined, starts = True, False
            else:
                joined = False
                starts = bool(re.search(r"[.!?:]", gap)) or _opens_quote(gap)
            self.words.append(word)
            self.starts.append(m.start())
            self.ends.append(m.end())
            self.norms.append(normalize_word(word))
            self.joined.append(joined)
            self.sentence_start.append(starts)
            self.paragraph.append(paragraph)
            prev_end, prev_word = m.end(), word
        self.lower_words = {w for w in self.words if w.islower()}

    def __len__(self):
        return len(self.words)

    def in_title(self, i):
        return self.starts[i] < self.title_end

    def leads(self, i):
        """Is word i in the title or the first paragraph?"""
        return self.in_title(i) or self.paragraph[i] == self.first_paragraph

    def capitalised(self, i):
        return self.words[i][0].isupper()

    def title_is_title_case(self):
        words = [i for i in range(len(self)) if self.in_title(i) and len(self.words[i]) > 3]
        return len(words) > 2 and sum(self.capitalised(i) for i in words) >= 0.8 * len(words)

    def matchable(self):
        """The words as one string for the automaton, "|" between phrases,
        and a map from each word's offset in it to the word's index."""
        parts, index, pos = [" "], {}, 1
        for i, norm in enumerate(self.norms):
            if i and not self.joined[i]:
                parts.append("| ")
                pos += 2
            index[pos] = i
            parts.append(norm + " ")
            pos += len(norm) + 1
        return "".join(parts), index


def _opens_quote(gap):
    if gap.endswith(("“", "‘")):
        return True
    return gap.endswith(('"', "'")) and (len(gap) == 1 or gap[-2].isspace())


def _role(leads, count):
    return ABOUT if leads or count >= ABOUT_COUNT else MENTIONS


# --- known entities ------------------------------------------------------------

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
            self.automaton.add_word(key, (len(key), key.count(" ") - 1, tuple(found)))
        if entries:
            self.automaton.make_automaton()

    def knows(self, name):
        """Is this name (or a surname) already an entity's?"""
        key = name_key(name)
        return bool(key) and (key in self.automaton or _strip_the(key) in self.automaton)

    def find(self, doc):
        """Known entities in doc, and the set of word indexes they cover."""
        if not len(self.automaton):
            return [], set()
        text, word_at = doc.matchable()
        matches = []
        for end, (length, n, found) in self.automaton.iter(text):
            i = word_at[end - length + 2]
            # A single lower-case word is a common noun: "sessions", "mesa".
            if n == 1 and doc.words[i].islower():
                continue
            matches.append((i, n, found))
        # Leftmost-longest: "Harbor Avenue" wins over the alias "Harbor".
        matches.sort(key=lambda m: (m[0], -m[1]))
        chosen, covered_to = [], 0
        for i, n, found in matches:
            if i >= covered_to:
                chosen.append((i, n, found))
                covered_to = i + n
        named = {pk for _, _, found in chosen for pk, surname in found if not surname}

        hits, covered = {}, set()
        for i, n, found in chosen:
            by_name = [pk for pk, surname in found if not surname]
            by_surname = [pk for pk, surname in found if surname and pk in named]
            # A surname of someone named in full beats an alias: in a text
            # about Dr. Marcus Webb, "Webb" is him, not the Webb telescope.
            pks = by_surname[:1] or by_name
            for pk in pks:
                hit = hits.setdefault(pk, [0, doc.starts[i], False])
                hit[0] += 1
                hit[2] = hit[2] or doc.leads(i)
            if pks:
                covered.update(range(i, i + n))
        known = [
            Known(pk, *self.entities[pk], count, first, _role(leads, count))
            for pk, (count, first, leads) in hits.items()
        ]
        known.sort(key=lambda k: k.first)
        return known, covered


def _strip_the(key):
    return key[4:] if key.startswith(" the ") and len(key) > 5 else key


def _label_keys(label):
    key = name_key(label)
    if not key:
        return []
    keys = {key, _strip_the(key)}
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


# --- new candidates -------------------------------------------------------------

# Words that start a sentence or a capitalised run but never a name.
STOPWORDS = {
    "the", "a", "an", "in", "on", "at", "of", "for", "from", "to", "into", "by", "with",
    "and", "or", "but", "nor", "so", "yet", "if", "as", "after", "before", "when", "while",
    "since", "during", "until", "although", "though", "because", "however", "meanwhile",
    "nationally", "still", "also", "just", "even", "only", "then", "there", "here", "now",
    "today", "yesterday", "tomorrow", "this", "that", "these", "those", "it", "its", "he",
    "she", "they", "we", "i", "you", "his", "her", "their", "our", "my", "your", "one",
    "two", "some", "many", "most", "all", "both", "each", "every", "no", "not", "other",
    "another", "what", "who", "why", "how", "where", "which", "according", "last", "next",
    "late", "early", "former", "acting", "outside", "inside", "under", "over", "about",
    "nobody", "anyone", "everyone", "someone", "yes", "asked", "speaking",
}  # fmt: skip
CALENDAR = {
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
    "sep", "sept", "oct", "nov", "dec", "monday", "tuesday", "wednesday", "thursday",
    "friday", "saturday", "sunday",
}  # fmt: skip
# Lower-case words allowed inside a name: "Department of Justice".
CONNECTORS = {"of", "for", "and", "de", "del", "da", "di", "du", "van", "von", "der", "la"}
# Titles before a name; what follows is a person, as in "Attorney General
# Jeff Sessions" or "Mayor Thomas Greer".
TITLES = {
    "president", "vice president", "senator", "sen", "state senator", "governor", "gov",
    "mayor", "judge", "secretary", "minister", "prime minister", "chancellor", "director",
    "deputy director", "deputy", "chairman", "chairwoman", "chair", "commissioner",
    "sheriff", "detective", "officer", "dr", "mr", "mrs", "ms", "professor", "prof",
    "coach", "manager", "captain", "councilwoman", "councilman", "councillor",
    "supervisor", "rep", "representative", "chief", "police chief", "ceo",
    "chief executive", "ambassador", "speaker", "pope", "king", "queen", "prince",
    "princess", "bishop", "rabbi", "reverend", "lieutenant", "colonel", "sergeant",
    "superintendent", "dean", "assistant", "attorney general", "inspector general",
    "surgeon general", "solicitor general", "u s attorney", "u s attorney general",
    "district attorney",
}  # fmt: skip
# Titles whose holder is named after a place: "Mesa Mayor Karen Holloway".
CIVIC_TITLES = {"mayor", "governor", "gov"}
# Lower-case words in front of a person's name: "winger Amara Diallo".
ROLE_NOUNS = {
    "deputy", "captain", "winger", "goalkeeper", "striker", "defender", "midfielder",
    "forward", "lawyer", "attorney", "spokesman", "spokeswoman", "spokesperson",
    "founder", "executive", "analyst", "economist", "author", "co-author", "mayor",
    "president", "senator", "governor", "judge", "minister", "manager", "coach",
    "director", "chairman", "professor", "researcher", "scientist", "officer", "chief",
    "secretary", "son", "daughter", "wife", "husband", "mother", "father", "brother",
    "sister", "actor", "actress", "singer", "player", "candidate", "leader", "suspect",
}  # fmt: skip
# Words that make a name an organisation, wherever they stand in it.
ORG_WORDS = {
    "department", "ministry", "agency", "commission", "committee", "council", "court",
    "bureau", "office", "service", "services", "institute", "institution", "university",
    "college", "school", "schools", "academy", "hospital", "clinic", "bank", "company",
    "co", "corp", "corporation", "inc", "ltd", "llc", "plc", "group", "association",
    "union", "party", "board", "authority", "foundation", "fund", "club", "fc",
    "federation", "league", "society", "organization", "organisation", "police",
    "senate", "congress", "parliament", "assembly", "reserve", "church", "network",
    "networks", "news", "press", "media", "airlines", "airways", "motors", "labs",
    "laboratories", "partners", "holdings", "capital", "ventures", "systems",
    "technologies", "technology", "pharmaceuticals", "industries", "energy", "electric",
    "construction", "development", "research", "data", "foods", "market", "markets",
    "exchange", "chamber", "workers", "rovers", "athletic", "wanderers", "rangers",
    "times", "post", "journal", "herald", "tribune", "gazette",
}  # fmt: skip
ORG_PREFIXES = {"department", "ministry", "university", "bank", "office", "bureau", "board",
                "centers", "center", "centre", "institute", "house", "museum"}  # fmt: skip
# "The … Times": a capitalised "The" that belongs to the name.
NEWSPAPER_WORDS = {
    "times", "post", "journal", "guardian", "herald", "tribune", "globe", "economist",
    "atlantic", "chronicle", "telegraph", "independent", "observer", "gazette", "republic",
    "sun", "star", "mirror", "inquirer", "examiner", "register", "bulletin",
}  # fmt: skip
PLACE_WORDS = {
    "county", "river", "lake", "mountain", "mountains", "island", "islands", "street",
    "avenue", "road", "boulevard", "square", "bridge", "park", "valley", "bay", "beach",
    "falls", "heights", "springs", "stadium", "arena", "airport", "delta", "coast",
    "canyon", "desert", "forest", "harbour", "peninsula", "province", "state", "district",
    "city",
}  # fmt: skip
PLACE_PREFIXES = {
    "new", "san", "santa", "los", "las", "el", "fort", "port", "mount", "lake", "saint",
    "north", "south", "east", "west", "central", "northern", "southern", "eastern",
    "western", "upper", "lower",
}  # fmt: skip
# Lower-case words before a place: "in El Paso", "into the United States".
PLACE_PREPOSITIONS = {"in", "at", "near", "from", "into", "across", "outside", "inside",
                      "throughout", "around", "toward", "towards"}  # fmt: skip
ACRONYM_STOP = {"CEO", "CFO", "COO", "CTO", "GDP", "TV", "AI", "OK", "PM", "AM", "ID",
                "DNA", "MP", "II", "III", "IV", "US", "UK", "USA", "PHD", "FAQ"}  # fmt: skip
DEMONYM_ENDINGS = ("ian", "ians", "ese", "ish", "ans")
DEMONYMS = {
    "american", "republican", "republicans", "democrat", "democrats", "democratic",
    "european", "english", "french", "german", "spanish", "british", "chinese",
    "japanese", "african", "asian", "latino", "muslim", "christian", "jewish", "catholic",
    "protestant", "amish", "god", "internet", "sun", "moon",
}  # fmt: skip


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


class _Tally:
    def __init__(self):
        self.found = {}  # key → [name, kind, count, first, leads]

    def add(self, key, name, kind, doc, i):
        entry = self.found.setdefault(key, [name, kind, 0, doc.starts[i], False])
        entry[2] += 1
        entry[4] = entry[4] or doc.leads(i)

    def candidates(self):
        out = [
            Candidate(name, kind, count, first, _role(leads, count))
            for name, kind, count, first, leads in self.found.values()
        ]
        return sorted(out, key=lambda c: c.first)


def rule_candidates(doc, index, covered):
    """New candidates by the form of the words around them."""
    skip = set(covered)
    if doc.title_is_title_case():
        # In "Governor Signs Water Bill" capitals say nothing.
        skip.update(i for i in range(len(doc)) if doc.in_title(i))
    tally, singles = _Tally(), []
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
            key = _strip_the(name_key(name))
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


# --- optional NER backend -----------------------------------------------------

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
    tally = _Tally()
    word_at = {start: i for i, start in enumerate(doc.starts)}
    for ent in nlp(doc.text).ents:
        kind = SPACY_KINDS.get(ent.label_)
        i = word_at.get(ent.start_char)
        if kind is None or i is None or ent.start_char in covered_chars:
            continue
        name = re.sub(r"^the\s+|['’]s$", "", ent.text.strip())
        if name and not index.knows(name):
            tally.add(_strip_the(name_key(name)), name, kind, doc, i)
    return tally.candidates()


# --- entry point -----------------------------------------------------------------


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
