"""The raw SMTP limit: the fastest a Python sender can push mail on this machine.

Pre-rendered ~5 KB multipart messages (text + HTML, one per recipient, each
with its own To and Message-ID) are pushed by plain smtplib over one
persistent connection per process into the benchmark SMTP sink, with 1 and
with 2 sender processes. Rendering happens before the clock starts; the clock
runs from the moment every sender is released to the sink's last accepted
message. This is the ceiling that delivery (fan-out) throughput is divided by.

    raw_smtp_limit(n, processes, sink) -> {"per_second", "seconds", ...}

Standalone: ``.venv/bin/python tests/benchmarks/bench_smtp.py --n 10000``.
"""

import multiprocessing
import smtplib
import sys
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.common import Row

PARAGRAPH = (
    "A new report by the inspector general shows that senior officials pushed "
    "for the policy even as field offices warned of the consequences, according "
    "to documents reviewed for this article. "
)
FROM = "Newsroom <news@localhost>"


def message_template(size=5_000):
    """One multipart message of about `size` bytes, with placeholders for the
    per-recipient parts, as bytes with CRLF line endings."""
    text = "\n\n".join([PARAGRAPH * 2] * 6)
    html = "".join(f"<p>{PARAGRAPH * 2}</p>\n" for _ in range(6))
    message = EmailMessage()
    message["Subject"] = "Report says officials pushed the policy"
    message["From"] = FROM
    message["To"] = "RECIPIENT"
    message["Message-ID"] = "<MESSAGEID>"
    message["List-Unsubscribe"] = "<https://example.com/unsubscribe/TOKEN/>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    message.add_alternative(f"<html><body>{html}</body></html>", subtype="html")
    data = message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return data


def render(count, offset):
    template = message_template()
    messages = []
    for i in range(offset, offset + count):
        to = f"reader{i}@example.com"
        msgid = make_msgid(f"raw{i}", domain="bench.localhost").strip("<>")
        data = template.replace(b"RECIPIENT", to.encode()).replace(b"MESSAGEID", msgid.encode())
        messages.append((to, data.replace(b"TOKEN", str(i).encode())))
    return messages


def send(port, count, offset, ready, go):
    """One sender process: render first, then wait for the start signal."""
    messages = render(count, offset)
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        ready.wait()
        go.wait()
        for to, data in messages:
            smtp.sendmail("news@localhost", [to], data)


def raw_smtp_limit(n, processes, sink, timeout=300):
    """Push `n` pre-rendered messages into `sink` (an SmtpSink) from
    `processes` processes, each over one persistent SMTP connection.

    Returns {"messages", "seconds", "per_second", "duplicates",
    "message_bytes", "processes"}.
    """
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Barrier(processes + 1)
    go = ctx.Event()
    shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    offsets = [sum(shares[:i]) for i in range(processes)]
    workers = [
        ctx.Process(target=send, args=(sink.port, share, offset, ready, go), daemon=True)
        for share, offset in zip(shares, offsets, strict=True)
    ]
    sink.reset()
    for worker in workers:
        worker.start()
    try:
        ready.wait(timeout=timeout)
        started = time.time()
        go.set()
        stats = sink.wait_for(n, timeout=timeout)
        for worker in workers:
            worker.join(timeout=timeout)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    seconds = stats["last"] - started
    return {
        "messages": stats["messages"],
        "seconds": seconds,
        "per_second": stats["messages"] / seconds,
        "duplicates": stats["duplicates"],
        "message_bytes": stats["bytes"] / max(stats["messages"], 1),
        "processes": processes,
    }


def median_raw_smtp_limit(n, processes, sink, repeats=3):
    """`raw_smtp_limit` run `repeats` times; the run with the median rate,
    with every rate under "runs". One process is latency-bound (four round
    trips per message) and moves with scheduling, so one run is not enough."""
    runs = sorted(
        (raw_smtp_limit(n, processes, sink) for _ in range(repeats)),
        key=lambda run: run["per_second"],
    )
    return {**runs[len(runs) // 2], "runs": [run["per_second"] for run in runs]}


def rows(ctx):
    """The raw limit with 1 and 2 processes; the 2-process figure divided by
    the 1-process one (how well sending scales on 2 cores)."""
    repeats = 1 if ctx.quick else 3
    one = ctx.once(("raw_smtp", 1), lambda: median_raw_smtp_limit(ctx.n, 1, ctx.sink, repeats))
    two = ctx.once(("raw_smtp", 2), lambda: median_raw_smtp_limit(ctx.n, 2, ctx.sink, repeats))
    size = f"{one['message_bytes'] / 1000:.1f} KB messages"
    return [
        Row(
            "Raw SMTP limit, 1 process (smtplib, pre-rendered)",
            one["per_second"],
            unit="msg/s",
            notes=f"{one['messages']:,} {size}, {one['duplicates']} duplicates, {spread(one)}",
            raw=one,
        ),
        Row(
            "Raw SMTP limit, 2 processes / 1 process",
            two["per_second"],
            one["per_second"],
            unit="msg/s",
            reference_label="1 process",
            notes=f"{two['messages']:,} messages, {two['duplicates']} duplicates, {spread(two)}",
            raw=two,
        ),
        *latency_rows(ctx),
    ]


LATENCY = 0.025  # seconds added to each reply: a relay about 25 ms away


def latency_rows(ctx):
    """Our fan-out (2 workers, default settings: 4 connections each, a
    window of 64 where the server offers CHUNKING) against the sink answering
    at once and 25 ms later, offering CHUNKING (BDAT) and not (PIPELINING
    alone, the path before CHUNKING); raw smtplib over one connection at
    both latencies; the ratios. A message costs raw smtplib four round
    trips, a pipelined connection one (plus one per send_many call), a
    window of BDAT messages one between them."""
    from tests.benchmarks.bench_fanout import fan_out
    from tests.benchmarks.smtp_sink import SmtpSink

    repeats = 1 if ctx.quick else 3
    raw2 = ctx.once(("raw_smtp", 2), lambda: median_raw_smtp_limit(ctx.n, 2, ctx.sink, repeats))
    raw1 = ctx.once(("raw_smtp", 1), lambda: median_raw_smtp_limit(ctx.n, 1, ctx.sink, repeats))
    ours0 = fan_out(ctx.n, 2, ctx.sink)
    with SmtpSink(latency=LATENCY) as far:
        raw_far = raw_smtp_limit(min(ctx.n, 200), 1, far)
        ours_far = fan_out(ctx.n, 2, far)
    # The path before CHUNKING: pipelining alone, one round trip per message.
    plain_n = min(ctx.n, 4000)
    with SmtpSink(chunking=False) as near_plain:
        plain0 = fan_out(ctx.n, 2, near_plain)
    with SmtpSink(latency=LATENCY, chunking=False) as far_plain:
        plain_far = fan_out(plain_n, 2, far_plain)
    ms = f"{LATENCY * 1000:.0f} ms"

    def notes(r):
        return (
            f"{r['messages']:,} messages ({r['chunked']:,} by BDAT), {r['duplicates']} duplicates, "
            f"mailing {r['mailing_done']}"
        )

    return [
        Row(
            "SMTP, ours 2 workers (4 connections each, CHUNKING offered) / raw limit (2), 0 ms",
            ours0["per_second"],
            raw2["per_second"],
            unit="msg/s",
            reference_label="raw limit, 2 processes",
            target="≥ 0.7",
            met=ours0["per_second"] / raw2["per_second"] >= 0.7,
            notes=notes(ours0),
            raw=ours0,
        ),
        Row(
            f"SMTP, ours 2 workers (defaults, CHUNKING offered), {ms} / 0 ms",
            ours_far["per_second"],
            ours0["per_second"],
            unit="msg/s",
            reference_label="ours at 0 ms",
            target="≥ 0.7",
            met=ours_far["per_second"] / ours0["per_second"] >= 0.7,
            notes=notes(ours_far),
            raw=ours_far,
        ),
        Row(
            f"SMTP, ours 2 workers (defaults), server without CHUNKING, {ms} / 0 ms",
            plain_far["per_second"],
            plain0["per_second"],
            unit="msg/s",
            reference_label="same server at 0 ms",
            notes=f"{notes(plain_far)}; at 0 ms: {plain0['per_second']:,.0f} msg/s",
            raw={"far": plain_far, "near": plain0},
        ),
        Row(
            f"Raw smtplib, 1 connection, {ms} / 0 ms",
            raw_far["per_second"],
            raw1["per_second"],
            unit="msg/s",
            reference_label="raw, 1 connection, 0 ms",
            notes=f"{raw_far['messages']:,} messages, 4 round trips each",
            raw=raw_far,
        ),
    ]


def spread(result):
    rates = ", ".join(f"{rate:,.0f}" for rate in result["runs"])
    return f"median of runs at {rates} msg/s"


if __name__ == "__main__":
    import argparse

    from tests.benchmarks.smtp_sink import SmtpSink

    parser = argparse.ArgumentParser(description="The raw SMTP limit.")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--latency", action="store_true", help="the 0 ms and 25 ms rows")
    args = parser.parse_args()
    if args.latency:
        from tests.benchmarks.common import Context

        ctx = Context(n=args.n, quick=True)
        try:
            for row in latency_rows(ctx):
                print(f"{row.figure}: {row.ours:,.1f} / {row.reference:,.1f} = {row.ratio:.2f}")
                print(f"    {row.notes}")
        finally:
            ctx.close()
        raise SystemExit
    with SmtpSink() as sink:
        for processes in (1, 2):
            result = raw_smtp_limit(args.n, processes, sink)
            print(
                f"{processes} process(es): {result['per_second']:,.0f} msg/s "
                f"({result['messages']:,} in {result['seconds']:.2f} s, "
                f"{result['message_bytes']:,.0f} bytes each, {result['duplicates']} duplicates)"
            )
