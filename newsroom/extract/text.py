"""Text as the extractor reads it: plain text from an article's HTML, its
words with their offsets, what the gaps between them mean (one name goes on,
a sentence or a paragraph starts), and each word normalised for matching.
"""

import bisect
import functools
import html
import itertools
import re
import unicodedata

from ..models import ArticleEntity, Entity

ABOUT = ArticleEntity.Role.ABOUT.value
MENTIONS = ArticleEntity.Role.MENTIONS.value
PERSON = Entity.Kind.PERSON.value
ORGANIZATION = Entity.Kind.ORGANIZATION.value
PLACE = Entity.Kind.PLACE.value

# Mentioned this often, an entity is what the article is about.
ABOUT_COUNT = 3

WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
WORD_SPLIT_RE = re.compile(f"({WORD_RE.pattern})")  # gap, word, gap, word … gap
# What may stand between two words of one name: spaces, a hyphen (Coca-Cola),
# a slash (SEO/BirdLife), an ampersand (AT&T) or a plural possessive.
JOINING_GAP_RE = re.compile(r"[ \t\xa0]+|[-/&]|[ \t\xa0]+&[ \t\xa0]+|['’][ \t\xa0]+")
COMMA_GAP_RE = re.compile(r",[ \t\xa0]*")
ABBREVIATION_GAP_RE = re.compile(r"\.[ \t\xa0]*")
# A gap that ends a sentence.
SENTENCE_GAP_RE = re.compile(r"[.!?:]")
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


def _normalize(word):
    word = word.replace("’", "'")
    if word.isascii():
        word = word.lower()
    else:
        word = unicodedata.normalize("NFKD", word)
        word = "".join(c for c in word if not unicodedata.combining(c)).casefold()
    return word[:-2] if word.endswith("'s") and len(word) > 2 else word


class _Normalised(dict):
    """word → normalised word, filled on first sight and emptied when it holds
    100,000: an article repeats most of its words, and the index its names'.
    A plain dict, so a list of words is normalised by `map` without a Python
    call for the words seen before."""

    def __missing__(self, word):
        if len(self) >= 100_000:
            self.clear()
        norm = self[word] = _normalize(word)
        return norm


_normalised = _Normalised()


def normalize_word(word):
    """Lower case, no accents, no possessive: "Horowitz’s" → "horowitz"."""
    return _normalised[word]


def name_key(name):
    """The automaton key of a name: its normalised words between spaces."""
    words = WORD_RE.findall(name)
    return " " + " ".join(map(_normalised.__getitem__, words)) + " " if words else ""


class Document:
    """The words of a title and body, with what the gaps between them mean."""

    def __init__(self, title, body):
        title = " ".join(title.split())
        body = plain_text(body)
        if title and body.startswith(title):
            title = ""  # the loader uses the first sentence as the title
        self.text = f"{title}\n\n{body}" if title else body
        self.title_end = len(title)
        # One pass splits the text into the gaps and the words between them:
        # gaps[i] stands before word i (gaps[0] before the first, gaps[n]
        # after the last). Offsets are running sums of the lengths, so no
        # per-word Python code runs until the gaps that are not one space.
        parts, odd_gaps = split_words(self.text)
        self.words = words = parts[1::2]
        self.gaps = gaps = parts[0::2]
        n = len(words)
        offsets = list(itertools.accumulate(map(len, parts)))
        self.starts = offsets[0 : 2 * n : 2]
        self.ends = offsets[1 : 2 * n : 2]
        self.norms = list(map(_normalised.__getitem__, words))
        self.joined = joined = [True] * n  # word i continues the phrase of word i-1
        # Only a comma stands before word i: a known name may go on across it
        # ("University of California, Berkeley"); a new name may not.
        self.after_comma = after_comma = [False] * n
        self.sentence_start = sentence_start = [False] * n
        self.first_paragraph = 0 if not title else 1
        # Words before which a known name may not go on (not joined, no comma),
        # and words that start a paragraph.
        self.phrase_breaks = phrase_breaks = []
        paragraph_starts = [0]
        if n:
            joined[0], sentence_start[0] = False, True
        # Most gaps are one space: the word goes on the phrase, nothing starts.
        for i in [i for i in odd_gaps if 0 < i < n and gaps[i] != " "]:
            line_break, joining, abbreviation, starts, comma = _gap_meaning(gaps[i])
            if line_break:
                joined[i], sentence_start[i] = False, True
                phrase_breaks.append(i)
                paragraph_starts.append(i)
            elif joining or (
                abbreviation and (len(words[i - 1]) == 1 or words[i - 1].lower() in ABBREVIATIONS)
            ):
                pass  # joined, and no sentence starts
            else:
                joined[i], sentence_start[i], after_comma[i] = False, starts, comma
                if not comma:
                    phrase_breaks.append(i)
        # Paragraph number of each word; the title is paragraph 0.
        self.paragraph = paragraph = [0] * n
        paragraph_starts.append(n)
        for number, (a, b) in enumerate(itertools.pairwise(paragraph_starts)):
            if number:
                paragraph[a:b] = itertools.repeat(number, b - a)
        # Each word is classed once, however often the text repeats it.
        distinct = set(words)
        self.lower_words = {w for w in distinct if w.islower()}
        self.capitalised_words = {w for w in distinct if w[0].isupper()}
        self.distinct_norms = set(map(_normalised.__getitem__, distinct))

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
        in_title = bisect.bisect_left(self.starts, self.title_end)
        words = [i for i in range(in_title) if len(self.words[i]) > 3]
        return len(words) > 2 and sum(self.capitalised(i) for i in words) >= 0.8 * len(words)

    def matchable(self):
        """The words as one string for the automaton, "|" between phrases;
        where each phrase starts in it (ascending), and the phrase's first
        word. The word at an offset is the phrase's first word plus the
        spaces between the phrase's start and it: no offset is kept per word."""
        norms, n = self.norms, len(self.norms)
        if not n:
            return " ", [], []
        firsts = [0, *self.phrase_breaks]
        phrases = [" ".join(norms[a:b]) for a, b in itertools.pairwise([*firsts, n])]
        # The first phrase starts after a space; each next one after " | ".
        steps = [len(phrase) + 3 for phrase in phrases]
        starts = list(itertools.accumulate(itertools.islice(steps, len(steps) - 1), initial=1))
        return " " + " | ".join(phrases) + " ", starts, firsts


def split_words(text):
    """WORD_SPLIT_RE.split(text) — gap, word, gap, word … gap — and, in
    order, the indexes of the words whose gap before them may be other than
    one space.

    The regular expression costs more per word than the rest of reading, so
    it runs only on the tokens between spaces that are not one word each
    ("said,", "Horowitz’s", a line break and "The"). A run of tokens that
    are (str.isalnum: the characters a word is made of, bar "_") is copied
    as it stands. No word holds a space, so splitting token by token gives
    what splitting the whole text does.
    """
    tokens = text.split(" ")
    n = len(tokens)
    odd = positions(list(map(str.isalnum, tokens)), (False,))
    odd.append(n)
    parts, odd_gaps, gap, previous = [], [], "", -1
    for t in odd:
        if t > previous + 1:  # tokens previous+1 … t-1: one word each
            if gap:
                odd_gaps.append(len(parts) // 2)
            parts.append(gap + " " if previous >= 0 else gap)
            words = [" "] * (2 * (t - previous - 1) - 1)
            words[0::2] = tokens[previous + 1 : t]
            parts += words
            gap = ""
        if t == n:
            break
        if t:
            gap += " "
        token = tokens[t]
        if token[:-1].isalnum() and token[-1] != "_":  # "said,"
            if gap != " ":
                odd_gaps.append(len(parts) // 2)
            parts += (gap, token[:-1])
            gap = token[-1]
        else:
            split = WORD_SPLIT_RE.split(token)
            if len(split) > 1:
                odd_gaps.extend(range(len(parts) // 2, len(parts) // 2 + len(split) // 2))
                parts.append(gap + split[0])
                parts += split[1:-1]
                gap = split[-1]
            else:
                gap += token
        previous = t
    parts.append(gap)
    return parts, odd_gaps


@functools.lru_cache(maxsize=4096)
def _gap_meaning(gap):
    """What a gap between two words says (articles repeat a few gaps, so this
    is cached): (a line break, a gap within a name, a full stop that joins
    when it ends an abbreviation, a sentence starts, only a comma)."""
    if "\n" in gap:
        return True, False, False, True, False
    return (
        False,
        JOINING_GAP_RE.fullmatch(gap) is not None,
        ABBREVIATION_GAP_RE.fullmatch(gap) is not None,
        bool(SENTENCE_GAP_RE.search(gap)) or _opens_quote(gap),
        COMMA_GAP_RE.fullmatch(gap) is not None,
    )


def _opens_quote(gap):
    if gap.endswith(("“", "‘")):
        return True
    return gap.endswith(('"', "'")) and (len(gap) == 1 or gap[-2].isspace())


def positions(items, values):
    """The indexes of the items that are one of values, in order. Each value
    is sought with list.index, which compares in C: quicker than a Python
    test of every item when the values are rare."""
    found = []
    for value in values:
        i = -1
        try:
            while True:
                i = items.index(value, i + 1)
                found.append(i)
        except ValueError:
            pass
    found.sort()
    return found


def role(leads, count):
    return ABOUT if leads or count >= ABOUT_COUNT else MENTIONS
