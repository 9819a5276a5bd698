"""Entity extraction: a 5,000-word article against 10,000 known entities.

Run with `.venv/bin/python tests/benchmarks/bench_extract.py`. Prints the time
to build the automaton and to extract (known pass and candidate pass), the
median of several runs. No database: the index is built from rows in memory,
exactly as `entity_index()` builds it from the Entity table.

In `make bench` (`rows()`), the figure is the extraction time (wall clock,
median of the runs), beside one regular-expression pass over the same
article's words (the least any reading of the text costs on this machine), so
the ratio travels between machines. A second row gives the CPU time of the
same calls (`time.process_time`, median), which other processes on a busy
machine disturb less than the wall clock; the notes give the fastest run of
each. Every call extracts from the same article with the same index, as a
server does for every article; nothing is cached between calls but what a
server also keeps (the automaton, the word lists, normalised words).
"""

import random
import re
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.common import Row, setup_django

setup_django(migrate=False)

from newsroom.extract import Document, EntityIndex, extract, rule_candidates  # noqa: E402

SYLLABLES = "ka lo mi ra ten vor sel dan bri gal mon tes har wyn ost pel cor ris nu ad".split()
ORG_ENDINGS = ["Department", "Foods", "Council", "Group", "University", "Agency", "Bank"]
PLACE_ENDINGS = ["County", "Valley", "River", "Heights", "Bay"]
FILLER = (
    "officials said on Tuesday that the plan would be reviewed again next month, "
    "and that the cost had risen since the last estimate was published"
).split()


def word(rng):
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def make_entities(n, rng):
    rows, names = [], set()
    while len(rows) < n:
        kind = rng.choice(["person", "person", "organization", "place"])
        if kind == "person":
            name = f"{word(rng)} {word(rng)}"
        elif kind == "organization":
            name = f"{word(rng)} {rng.choice(ORG_ENDINGS)}"
        else:
            name = f"{word(rng)} {rng.choice(PLACE_ENDINGS)}"
        if name not in names:
            names.add(name)
            rows.append((len(rows) + 1, name, kind, ""))
    return rows


def make_article(rows, words, rng):
    mentioned = rng.sample(rows, 150)
    out, count = [], 0
    while count < words:
        sentence = rng.sample(FILLER, 12)
        _, name, kind, _ = rng.choice(mentioned)
        sentence.insert(rng.randint(0, 11), name)
        if kind == "person":
            sentence.append(name.split()[-1])  # a bare surname later on
        unknown = f"{word(rng)} {word(rng)}"  # a name the table does not know
        sentence.insert(rng.randint(0, 11), unknown)
        sentence[0] = sentence[0][0].upper() + sentence[0][1:]
        out.append(" ".join(sentence) + ".")
        count += len(sentence) + 2
        if len(out) % 8 == 0:
            out.append("\n")
    return " ".join(out)


def timed(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def timed_both(fn, runs):
    """Wall-clock and CPU (process) times of each run, in seconds."""
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return wall, cpu, result


def benchmark_input(entities=10_000, words=5_000):
    """The index, title and body every figure here is measured on."""
    rng = random.Random(7)
    table = make_entities(entities, rng)
    body = make_article(table, words, rng)
    title = "A report names " + table[0][1]
    assert len(table) == entities and abs(len(body.split()) - words) < 20
    return table, title, body


def main(entities=10_000, words=5_000, runs=5):
    rows, title, body = benchmark_input(entities, words)

    build, index = timed(lambda: EntityIndex(rows), runs)
    extract(title, body, index, backend="rules")  # the first call reads the word lists
    wall, cpu, result = timed_both(lambda: extract(title, body, index, backend="rules"), runs)
    total = statistics.median(wall)
    doc = Document(title, body)
    parse, _ = timed(lambda: Document(title, body), runs)
    known, (_, covered) = timed(lambda: index.find(doc), runs)
    new, _ = timed(lambda: rule_candidates(doc, index, covered), runs)

    print(f"{len(rows):,} known entities, article of {len(body.split()):,} words")
    print(f"build automaton      {build * 1000:8.1f} ms")
    print(f"extract (total)      {total * 1000:8.1f} ms  (fastest {min(wall) * 1000:.1f})")
    print(
        f"  CPU time           {statistics.median(cpu) * 1000:8.1f} ms  (fastest {min(cpu) * 1000:.1f})"
    )
    print(f"  read text          {parse * 1000:8.1f} ms")
    print(f"  known pass         {known * 1000:8.1f} ms  ({len(result.known)} entities)")
    print(f"  candidate pass     {new * 1000:8.1f} ms  ({len(result.new)} candidates)")
    half, _ = timed(lambda: extract(title, body[: len(body) // 2], index, backend="rules"), runs)
    print(f"half the article     {half * 1000:8.1f} ms  (ratio {total / half:.2f}, linear ≈ 2)")


def rows(ctx):
    table, title, body = benchmark_input()
    index = EntityIndex(table)
    runs = 5 if ctx.quick else 21
    extract(title, body, index, backend="rules")  # the first call reads the word lists
    wall, cpu, result = timed_both(lambda: extract(title, body, index, backend="rules"), runs)
    words = re.compile(r"\w+")
    scan_wall, scan_cpu, _ = timed_both(lambda: words.findall(body.lower()), runs)
    build, _ = timed(lambda: EntityIndex(table), 3)
    total, total_cpu = statistics.median(wall), statistics.median(cpu)
    scan, scan_cpu = statistics.median(scan_wall), statistics.median(scan_cpu)
    size = f"{len(body.split()):,} words vs {len(table):,} entities"
    return [
        Row(
            "Entity extraction, 5,000 words vs 10,000 entities",
            total * 1000,
            scan * 1000,
            unit="ms",
            reference_label="one regex pass over the words",
            target="< 20 ms",
            met=total * 1000 < 20,
            notes=(
                f"{size}; wall clock, median of {runs} calls (fastest {min(wall) * 1000:.1f} ms); "
                f"{len(result.known)} known, {len(result.new)} new; "
                f"automaton built once in {build * 1000:.0f} ms"
            ),
            raw={
                "extract_ms": total * 1000,
                "scan_ms": scan * 1000,
                "build_ms": build * 1000,
                "wall_ms": [t * 1000 for t in wall],
                "cpu_ms": [t * 1000 for t in cpu],
            },
        ),
        Row(
            "Entity extraction, CPU time (process_time)",
            total_cpu * 1000,
            scan_cpu * 1000,
            unit="ms",
            reference_label="one regex pass, CPU time",
            target="< 20 ms",
            met=total_cpu * 1000 < 20,
            notes=(
                f"{size}; CPU time of the same {runs} calls, median "
                f"(fastest {min(cpu) * 1000:.1f} ms): less disturbed by other processes"
            ),
            raw={"extract_cpu_ms": total_cpu * 1000, "scan_cpu_ms": scan_cpu * 1000},
        ),
    ]


if __name__ == "__main__":
    main()
