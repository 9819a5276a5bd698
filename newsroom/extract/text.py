"""Text as the extractor reads it: plain text from an article's HTML, its
words with their offsets, what the gaps between them mean (one name goes on,
a sentence or a paragraph starts), and each word normalised for matching.
"""

import bisect
import functools
import html
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
# What may stand between two words of one name: spaces, a hyphen (Coca-Cola),
# a slash (SEO/BirdLife), an ampersand (AT&T) or a plural possessive.
JOINING_GAP_RE = re.compile(r"[ \t\xa0]+|[-/&]|[ \t\xa0]+&[ \t\xa0]+|['’][ \t\xa0]+")
COMMA_GAP_RE = re.compile(r",[ \t\xa0]*")
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


@functools.lru_cache(maxsize=100_000)
def normalize_word(word):
    """Lower case, no accents, no possessive: "Horowitz’s" → "horowitz".

    Cached: an article repeats most of its words, and the index its names'.
    """
    word = word.replace("’", "'")
    if word.isascii():
        word = word.lower()
    else:
        word = unicodedata.normalize("NFKD", word)
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
        matches = list(WORD_RE.finditer(self.text))
        self.words = words = [m.group() for m in matches]
        self.starts = [m.start() for m in matches]
        self.ends = [m.end() for m in matches]
        self.norms = list(map(normalize_word, words))
        n = len(words)
        self.joined = [True] * n  # word i continues the phrase of word i-1
        # Only a comma stands before word i: a known name may go on across it
        # ("University of California, Berkeley"); a new name may not.
        self.after_comma = [False] * n
        self.sentence_start = [False] * n
        self.paragraph = [0] * n  # paragraph number; the title is paragraph 0
        self.first_paragraph = 0 if not title else 1
        if n:
            self.joined[0], self.sentence_start[0] = False, True
        text, paragraph = self.text, 0
        for i in range(1, n):
            gap = text[self.ends[i - 1] : self.starts[i]]
            if gap == " ":  # most gaps: the fast path
                self.paragraph[i] = paragraph
                continue
            if "\n" in gap:
                paragraph += 1
                joined, starts = False, True
            elif JOINING_GAP_RE.fullmatch(gap) or (
                ABBREVIATION_GAP_RE.fullmatch(gap)
                and (len(words[i - 1]) == 1 or words[i - 1].lower() in ABBREVIATIONS)
            ):
                joined, starts = True, False
            else:
                joined = False
                starts = bool(re.search(r"[.!?:]", gap)) or _opens_quote(gap)
                self.after_comma[i] = COMMA_GAP_RE.fullmatch(gap) is not None
            self.joined[i], self.sentence_start[i], self.paragraph[i] = joined, starts, paragraph
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
        in_title = bisect.bisect_left(self.starts, self.title_end)
        words = [i for i in range(in_title) if len(self.words[i]) > 3]
        return len(words) > 2 and sum(self.capitalised(i) for i in words) >= 0.8 * len(words)

    def matchable(self):
        """The words as one string for the automaton, "|" between phrases,
        and a map from each word's offset in it to the word's index."""
        parts, index, pos = [" "], {}, 1
        for i, norm in enumerate(self.norms):
            if i and not (self.joined[i] or self.after_comma[i]):
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


def role(leads, count):
    return ABOUT if leads or count >= ABOUT_COUNT else MENTIONS
