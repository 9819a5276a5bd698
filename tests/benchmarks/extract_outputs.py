"""What extract() returns on many texts, to show that a speed-up changed nothing.

Run it from the root of two checkouts (say a worktree of main at the commit
you branched from, and your branch; the same virtualenv), then compare:

    cd /tmp/base && SECRET_KEY=x python ~/branch/tests/benchmarks/extract_outputs.py /tmp/a.json
    cd ~/branch && SECRET_KEY=x python tests/benchmarks/extract_outputs.py /tmp/b.json
    python tests/benchmarks/extract_outputs.py --compare /tmp/a.json /tmp/b.json

It imports the code of the checkout it runs in (the working directory), so
the older one need not have this file. The texts: every labelled text of
both sets (tests/newsroom/extraction_real and extraction_set of that
checkout), with an empty index
and with one of all their labels; the benchmark's article (whole, half, and
with an empty index); and --n texts made from the labelled ones by shuffling
sentences and paragraphs, slicing, mixing words, changing case,
punctuation, gaps and adding HTML, each against an empty index, all the
labels or a random part of them. --seed chooses them; the same seed makes
the same texts in every checkout. Reads files only.
"""

import argparse
import hashlib
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
SETS = [
    ROOT / "tests" / "newsroom" / "extraction_real",
    ROOT / "tests" / "newsroom" / "extraction_set",
]
GAPS = [" ", "  ", "\t", "\xa0", ", ", ". ", "; ", " - ", "-", "/", " & ", "’ ", "' ", ": ", "\n",
        "\n\n", " (", ") ", " “", "” ", '"', " '", "! ", "? ", "—", " -- ", ",", "."]  # fmt: skip


def outputs(n, seed):
    from tests.benchmarks.common import setup_django

    setup_django(migrate=False)
    from newsroom.extract import EntityIndex, extract
    from newsroom.management.commands.evaluate_extraction import labelled_entities, load_set
    from tests.benchmarks.bench_extract import benchmark_input

    samples = [sample for path in SETS for sample in load_set(path)]
    rows = [
        (pk, name, kind, "\n".join(aliases))
        for pk, (name, kind, aliases) in enumerate(labelled_entities(samples), 1)
    ]
    full, empty = EntityIndex(rows), EntityIndex([])
    cases = []  # (label, title, body, index)
    for sample in samples:
        cases.append((f"{sample.name}/empty", sample.title, sample.body, empty))
        cases.append((f"{sample.name}/all", sample.title, sample.body, full))
    table, title, body = benchmark_input()
    bench = EntityIndex(table)
    cases.append(("benchmark", title, body, bench))
    cases.append(("benchmark/half", title, body[: len(body) // 2], bench))
    cases.append(("benchmark/empty", title, body[:8000], empty))

    rng = random.Random(seed)
    paragraphs = [p for s in samples for p in s.body.split("\n") if p.strip()]
    sentences = [x for p in paragraphs for x in re.split(r"(?<=[.!?])\s+", p)]
    pool = [w for p in paragraphs for w in p.split()]

    def mutate(text):
        out = []
        for token in re.split(r"(\s+)", text):
            r = rng.random()
            if not token.strip():
                out.append(rng.choice(GAPS) if r < 0.05 else token)
            elif r < 0.14:
                out.append(
                    [
                        token.upper(),
                        token.lower(),
                        token.capitalize(),
                        rng.choice(pool),
                        "",
                        token + "’s",
                        token + rng.choice(",.;:()"),
                    ][min(int(r / 0.02), 6)]
                )
            else:
                out.append(token)
        return "".join(out)

    for k in range(n):
        kind = rng.randrange(6)
        if kind == 0:
            text = " ".join(rng.sample(sentences, rng.randint(3, 40)))
        elif kind == 1:
            text = "\n\n".join(rng.sample(paragraphs, rng.randint(2, 15)))
        elif kind == 2:
            text = mutate(rng.choice(samples).body)
        elif kind == 3:
            text = mutate("\n".join(rng.sample(paragraphs, rng.randint(2, 10))))
        elif kind == 4:
            whole = rng.choice(samples).body
            start = rng.randrange(len(whole))
            text = whole[start : start + rng.randint(1, 3000)]
        else:
            text = "".join(rng.choice(pool) + rng.choice(GAPS) for _ in range(rng.randint(1, 300)))
        if rng.random() < 0.1:
            text = "<p>" + text.replace("\n", "</p><p>") + "</p>"
        r = rng.random()
        if r < 0.4:
            heading = ""
        elif r < 0.7:
            heading = rng.choice(sentences)
        elif r < 0.8:
            heading = text[:60]
        else:
            heading = mutate(rng.choice(samples).title or "")
        r = rng.random()
        if r < 0.3:
            index, name = empty, "empty"
        elif r < 0.5:
            index, name = full, "all"
        else:
            part = rng.sample(rows, rng.randint(1, len(rows)))
            index, name = EntityIndex(part), f"{len(part)} labels"
        cases.append((f"made {k} ({kind}, {name})", heading, text, index))

    found = {}
    for label, heading, text, index in cases:
        try:
            result = extract(heading, text, index, backend="rules")
            found[label] = [
                result.text,
                [[k.id, k.name, k.kind, k.count, k.first, k.role] for k in result.known],
                [[c.name, c.kind, c.count, c.first, c.role, list(c.aliases)] for c in result.new],
            ]
        except Exception as error:  # an error is an output too
            found[label] = ["error", type(error).__name__, str(error)]
    return found


def compare(a, b):
    before, after = json.loads(Path(a).read_text()), json.loads(Path(b).read_text())
    if before.keys() != after.keys():
        print("not the same texts: were both made with the same --n and --seed?")
        return 2
    differ = [label for label in before if before[label] != after[label]]
    print(f"{len(differ)} of {len(before)} texts differ")
    for label in differ[:5]:
        print(f"  {label}:")
        for part, old, new in zip(
            ("text", "known", "new"), before[label], after[label], strict=False
        ):
            if old != new:
                print(f"    {part}: {str(old)[:300]}\n    now: {str(new)[:300]}")
    return 1 if differ else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", help="write the outputs here (JSON)")
    parser.add_argument("--n", type=int, default=4000, help="texts made from the labelled ones")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    found = outputs(args.n, args.seed)
    text = json.dumps(found, ensure_ascii=False)
    Path(args.out).write_text(text)
    errors = sum(1 for value in found.values() if value[0] == "error")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    print(f"{len(found)} texts, {errors} errors, sha256 {digest}")


if __name__ == "__main__":
    main()
