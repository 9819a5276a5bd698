"""Document reads a text in a few passes over whole lists (offsets are running
sums of lengths; only gaps that are not one space are looked at). What it
derives must be what reading the text word by word gives: this test reads it
that way, on every labelled text and on awkward ones, and compares."""

import bisect
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsroom.extract import rules
from newsroom.extract.text import (
    ABBREVIATION_GAP_RE,
    ABBREVIATIONS,
    COMMA_GAP_RE,
    JOINING_GAP_RE,
    WORD_RE,
    WORD_SPLIT_RE,
    Document,
    _opens_quote,
    normalize_word,
    positions,
    split_words,
)

HERE = Path(__file__).parent
TEXTS = sorted((HERE / "extraction_real").glob("*.txt")) + sorted(
    (HERE / "extraction_set").glob("*.txt")
)
AWKWARD = [
    ("", ""),
    ("A title", ""),
    ("", "one"),
    ("", "  spaces before and after  "),
    ("Title", "Title and body start alike."),
    ("T", "line\r\n\r\nbreaks, Windows’ way"),
    ("", "...!!! ---"),
    ("", "O’Neill’s U.S. office in Washington, D.C., on Jan. 5 (FEMA).\n\n\nNext"),
    ("Héllo Wörld", "Ünïcode façade’s naïve — “quoted” ‘text’.\n \nA new paragraph:\tyes"),
    ("", "<p>HTML &amp; tags</p><p>Second&nbsp;one</p>"),
]


def word_by_word(doc):
    """What each word's gap means, found one word at a time."""
    text = doc.text
    matches = list(WORD_RE.finditer(text))
    words = [m.group() for m in matches]
    starts, ends = [m.start() for m in matches], [m.end() for m in matches]
    n = len(words)
    joined, after_comma = [True] * n, [False] * n
    sentence_start, paragraph = [False] * n, [0] * n
    if n:
        joined[0], sentence_start[0] = False, True
    number = 0
    for i in range(1, n):
        gap = text[ends[i - 1] : starts[i]]
        if "\n" in gap:
            number += 1
            joined[i], sentence_start[i] = False, True
        elif JOINING_GAP_RE.fullmatch(gap) or (
            ABBREVIATION_GAP_RE.fullmatch(gap)
            and (len(words[i - 1]) == 1 or words[i - 1].lower() in ABBREVIATIONS)
        ):
            pass
        elif gap != " ":
            joined[i] = False
            sentence_start[i] = bool(re.search(r"[.!?:]", gap)) or _opens_quote(gap)
            after_comma[i] = COMMA_GAP_RE.fullmatch(gap) is not None
        paragraph[i] = number
    gaps = [text[: starts[0]] if n else text]
    gaps += [text[ends[i - 1] : starts[i]] for i in range(1, n)]
    gaps += [text[ends[-1] :]] if n else []
    return {
        "words": words,
        "starts": starts,
        "ends": ends,
        "gaps": gaps,
        "norms": [normalize_word(w) for w in words],
        "joined": joined,
        "after_comma": after_comma,
        "sentence_start": sentence_start,
        "paragraph": paragraph,
        "lower_words": {w for w in words if w.islower()},
        "capitalised_words": {w for w in words if w[0].isupper()},
    }


def matchable_word_by_word(doc):
    parts, offsets, pos = [" "], [], 1
    for i, norm in enumerate(doc.norms):
        if i and not (doc.joined[i] or doc.after_comma[i]):
            parts.append("| ")
            pos += 2
        offsets.append(pos)
        parts.append(norm + " ")
        pos += len(norm) + 1
    return "".join(parts), offsets


@pytest.mark.parametrize(
    "title,body",
    [(t.stem, t.read_text(encoding="utf-8")) for t in TEXTS] + AWKWARD,
    ids=[t.stem for t in TEXTS] + [f"awkward-{i}" for i in range(len(AWKWARD))],
)
def test_document_derives_what_reading_word_by_word_gives(title, body):
    doc = Document(title, body)

    expected = word_by_word(doc)

    assert {name: getattr(doc, name) for name in expected} == expected
    text, offsets = matchable_word_by_word(doc)
    matchable, phrase_starts, phrase_firsts = doc.matchable()
    assert matchable == text
    # What EntityIndex.find does to find the word at an offset.
    found = []
    for offset in offsets:
        k = bisect.bisect_right(phrase_starts, offset) - 1
        found.append(phrase_firsts[k] + matchable.count(" ", phrase_starts[k], offset))
    assert found == list(range(len(doc)))


def test_the_labelled_texts_are_there_to_compare():
    assert len(TEXTS) >= 50


def runs_word_by_word(doc, skip):
    """Maximal runs of capitalised words and connectors, visiting every word."""
    run, runs = [], []
    words, norms, joined = doc.words, doc.norms, doc.joined
    for i, word in enumerate(words):
        capital = word[0].isupper() and word != "I"
        ok = i not in skip and (
            capital
            or (run and norms[i] in rules.CONNECTORS)
            or (run and norms[i] in rules.ORG_CONNECTORS and rules._names_org(doc, run))
            or (run and norms[i] == "at" and norms[run[0]] == "university")
        )
        breaks = not joined[i] or (
            run
            and (
                (rules._possessive(words[run[-1]]) and norms[i] not in rules.ORG_WORDS)
                or (norms[i] == "of" and i + 1 < len(words) and words[i + 1].isupper())
            )
        )
        if run and (not ok or breaks):
            runs.append(run)
            run = []
        if ok and (run or capital):
            run.append(i)
    return runs + [run] if run else runs


@pytest.mark.parametrize(
    "title,body",
    [(t.stem, t.read_text(encoding="utf-8")) for t in TEXTS] + AWKWARD,
    ids=[t.stem for t in TEXTS] + [f"awkward-{i}" for i in range(len(AWKWARD))],
)
def test_runs_start_only_at_capitals_yet_find_what_every_word_gives(title, body):
    doc = Document(title, body)
    # Skipped words break runs: every fifth word, as known names would.
    for skip in (set(), set(range(0, len(doc), 5))):
        assert list(rules._runs(doc, skip)) == runs_word_by_word(doc, skip)


@pytest.mark.parametrize(
    "items,values",
    [
        ([], {"a"}),
        (["a", "b", "a"], set()),
        (["a", "b", "a", "c", "b"], {"b", "a"}),
        (list("xyz"), {"q"}),
    ],
)
def test_positions_are_where_the_values_stand_in_order(items, values):
    assert positions(items, values) == [i for i, item in enumerate(items) if item in values]


# Text made of what makes reading hard: apostrophes inside and around words,
# "_" (a word character that str.isalnum refuses), runs of spaces, line
# breaks, accents (and a combining one), punctuation that joins or ends.
AWKWARD_TEXT = st.lists(
    st.sampled_from(
        ["ab", "Zé", "9", "_", "'", "’", "'s", "’s", " ", "  ", ",", ".", "-", "/", "&",
         "\n", "\t", "\xa0", "ß", "e\u0301", "“", "”", "(", ")", "Mr", "U", "S"]
    ),
    max_size=40,
).map("".join)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(AWKWARD_TEXT)
def test_splitting_by_tokens_gives_what_the_regular_expression_does(text):
    parts, odd_gaps = split_words(text)

    assert parts == WORD_SPLIT_RE.split(text)
    gaps, n = parts[0::2], len(parts) // 2
    odd = [i for i in odd_gaps if 0 < i < n and gaps[i] != " "]
    assert odd == [i for i in range(1, n) if gaps[i] != " "]


@settings(max_examples=300, deadline=None)
@given(AWKWARD_TEXT, AWKWARD_TEXT)
def test_document_reads_awkward_text_as_word_by_word_does(title, body):
    doc = Document(title, body)

    expected = word_by_word(doc)

    assert {name: getattr(doc, name) for name in expected} == expected
