"""`make bench`: run the benchmarks and print one table of ratios.

Each benchmark is a module `tests/benchmarks/bench_<name>.py` with a function
`rows(ctx) -> list[Row]` (see common.py). The runner imports them in ORDER,
then any other `bench_*.py` it finds (so a new benchmark only has to exist),
calls each with one shared `Context`: the options, one SMTP sink for the
whole run (`ctx.sink`) and a memo (`ctx.once(key, fn)`), so a figure that
several rows divide by — the raw SMTP limit, django-newsletter — is measured
once per run. Every ratio in the table is made of two numbers measured in the
same run; both are printed beside it.

    .venv/bin/python tests/benchmarks/run.py [--n 10000] [--only web,smtp]
                                             [--quick] [--json out.json]

A benchmark that fails prints its traceback and a FAILED row; the others
still run, and the exit status is 1.
"""

import argparse
import importlib
import json
import math
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.common import Context, Row

HERE = Path(__file__).resolve().parent
# Fast and self-contained first; the lead's fan-out (bench_fanout.py) slots in
# after the raw limit and the peer it is divided by.
ORDER = ["extract", "smtp", "peer", "fanout", "web"]


def benchmark_names():
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return [name for name in ORDER if name in found] + [n for n in found if n not in ORDER]


def number(value, unit=""):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def table(rows):
    header = ["figure", "ours", "reference", "ratio", "target", "met?"]
    lines = [header]
    for row in rows:
        reference = number(row.reference, row.unit)
        if row.reference is not None and row.reference_label:
            reference += f" ({row.reference_label})"
        met = {True: "yes", False: "NO", None: "—"}[row.met]
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}"
        lines.append(
            [row.figure, number(row.ours, row.unit), reference, ratio, row.target or "—", met]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [f"- {row.figure}: {row.notes}" for row in rows if row.notes]
    return "\n".join(out + ([""] + notes if notes else []))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the benchmarks; print one table.")
    parser.add_argument("--n", type=int, default=10_000, help="readers/messages (default 10,000)")
    parser.add_argument("--only", default="", help="comma-separated names, e.g. smtp,peer")
    parser.add_argument("--quick", action="store_true", help="shorter web runs, fewer repeats")
    parser.add_argument("--json", type=Path, help="also write the rows, raw numbers included")
    args = parser.parse_args(argv)

    names = benchmark_names()
    if args.only:
        wanted = [name.strip() for name in args.only.split(",")]
        unknown = set(wanted) - set(names)
        if unknown:
            parser.error(f"unknown benchmark(s) {sorted(unknown)}; known: {names}")
        names = [name for name in names if name in wanted]

    ctx = Context(n=args.n, quick=args.quick)
    rows, failed = [], False
    started = time.monotonic()
    try:
        for name in names:
            print(f"== {name}", flush=True)
            begin = time.monotonic()
            try:
                module = importlib.import_module(f"tests.benchmarks.bench_{name}")
                rows += module.rows(ctx)
            except Exception:
                traceback.print_exc()
                rows.append(Row(f"{name}: FAILED (see the traceback above)", float("nan")))
                failed = True
            print(f"   {time.monotonic() - begin:.0f} s", flush=True)
    finally:
        ctx.close()

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(f"N = {args.n:,}; {when}; {platform.node()}, {platform.python_version()}, ", end="")
    print(f"{_cores()} cores; {time.monotonic() - started:.0f} s")
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"n": args.n, "date": when, "rows": [row.as_dict() for row in rows]},
                indent=2,
                default=str,
            )
        )
    return 1 if failed else 0


def _cores():
    import os

    return os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
