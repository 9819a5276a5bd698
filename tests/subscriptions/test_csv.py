import csv
import io

import pytest
from django.core.management import CommandError, call_command

from subscriptions import csvio
from subscriptions.models import Follow, Subscriber
from tests.factories import make_subscriber

Status = Subscriber.Status
pytestmark = pytest.mark.django_db

# One of each way a row can be wrong, used in turn.
MALFORMED = [
    "not-an-address,Bad,instant,",
    "bad{i}@,Bad,instant,",
    "bad{i}@example.com,Bad,hourly,",
    "bad{i}@example.com,Bad,daily,no-such-topic",
    ",No address,weekly,",
    "bad{i}@example.com,Bad,daily,el-paso,extra-column",
    "bad{i}@exa mple.com,Bad,instant,",
]
GOOD_TOPICS = ["", "el-paso", "jeff-sessions el-paso", "justice-department"]
FREQUENCIES = ["instant", "daily", "weekly", ""]


def make_csv(rows=10_000, every=20):
    """(csv text, line numbers of the malformed rows): one row in `every`
    is malformed, i.e. 5 %."""
    lines = ["email,name,frequency,topics"]
    bad_lines = []
    for i in range(rows):
        if i % every == every - 1:
            lines.append(MALFORMED[len(bad_lines) % len(MALFORMED)].format(i=i))
            bad_lines.append(len(lines))
        else:
            name = f'"Reader, No. {i}"' if i % 3 else f"Reader {i}"
            lines.append(f"reader{i}@Example.com,{name},{FREQUENCIES[i % 4]},{GOOD_TOPICS[i % 4]}")
    return "\n".join(lines) + "\n", bad_lines


def snapshot():
    return sorted(
        (s.email, s.name, s.frequency, s.follows_everything, tuple(s.topics()), s.status)
        for s in Subscriber.objects.prefetch_related("follows")
    )


def test_it_imports_good_rows_and_reports_each_bad_one_by_line():
    text, bad_lines = make_csv()
    result = csvio.import_csv(io.StringIO(text, newline=""), confirmed=True)
    assert len(bad_lines) == 500
    assert result.created == 9_500
    assert result.error_count == 500
    assert [line for line, _ in result.errors] == bad_lines
    assert Subscriber.objects.count() == 9_500
    assert Subscriber.objects.filter(status=Status.CONFIRMED).count() == 9_500
    assert not Subscriber.objects.filter(name="Bad").exists()
    assert Subscriber.objects.get(email="reader2@example.com").topics() == [
        "el-paso",
        "jeff-sessions",
    ]
    assert Subscriber.objects.get(email="reader1@example.com").name == "Reader, No. 1"
    messages = dict(result.errors)
    assert "frequency must be one of" in messages[bad_lines[2]]
    assert "unknown topics: no-such-topic" in messages[bad_lines[3]]
    assert messages[bad_lines[4]] == "no email address"
    assert messages[bad_lines[5]] == "too many columns"


def test_without_consent_imported_addresses_are_pending():
    result = csvio.import_csv(io.StringIO("email\nann@example.com\n"))
    assert result.created == 1
    subscriber = Subscriber.objects.get()
    assert subscriber.status == Status.PENDING
    assert subscriber.confirmation_sent_at is not None


def test_it_never_changes_a_stored_address_and_counts_duplicates():
    make_subscriber("left@example.com", status=Status.UNSUBSCRIBED, name="Left")
    text = "email,name\nleft@example.com,New\nann@example.com,Ann\nANN@EXAMPLE.COM,Twice\n"
    text = text.replace("ANN@EXAMPLE.COM", "ann@EXAMPLE.com")
    result = csvio.import_csv(io.StringIO(text), confirmed=True)
    assert (result.created, result.duplicates, result.error_count) == (1, 2, 0)
    left = Subscriber.objects.get(email="left@example.com")
    assert (left.status, left.name) == (Status.UNSUBSCRIBED, "Left")
    assert Subscriber.objects.get(email="ann@example.com").name == "Ann"


def test_a_file_without_an_email_column_is_refused():
    with pytest.raises(ValueError, match="email"):
        csvio.import_csv(io.StringIO("name,frequency\nAnn,daily\n"))
    assert Subscriber.objects.count() == 0


def test_the_commands_round_trip_without_loss(tmp_path):
    text, _ = make_csv(rows=2_000)
    source = tmp_path / "in.csv"
    source.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    call_command("import_subscribers", str(source), "--confirmed", stdout=out, stderr=err)
    assert "1900 added" in out.getvalue()
    assert "line 21: " in err.getvalue()
    before = snapshot()

    exported = tmp_path / "out.csv"
    call_command("export_subscribers", "-o", str(exported))
    with exported.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["email", "name", "frequency", "topics"]
    assert len(rows) == 1 + 1_900

    Subscriber.objects.all().delete()
    assert Follow.objects.count() == 0
    call_command("import_subscribers", str(exported), "--confirmed", stdout=io.StringIO())
    assert snapshot() == before


def test_export_writes_to_stdout_and_only_confirmed_by_default():
    make_subscriber("ann@example.com", name="Ann, Lee", topics=["el-paso", "jeff-sessions"])
    make_subscriber("left@example.com", status=Status.UNSUBSCRIBED)
    out = io.StringIO()
    call_command("export_subscribers", stdout=out)
    assert out.getvalue().splitlines() == [
        "email,name,frequency,topics",
        'ann@example.com,"Ann, Lee",instant,el-paso jeff-sessions',
    ]
    out = io.StringIO()
    call_command("export_subscribers", "--status", "all", stdout=out)
    assert len(out.getvalue().splitlines()) == 3


def test_importing_twice_adds_nothing(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("email\nann@example.com\nbob@example.com\n")
    call_command("import_subscribers", str(source), "--confirmed", stdout=io.StringIO())
    out = io.StringIO()
    call_command("import_subscribers", str(source), "--confirmed", stdout=out)
    assert out.getvalue().startswith("0 added, 2 already there")
    assert Subscriber.objects.count() == 2


def test_undecodable_bytes_make_a_bad_row_not_a_crash(tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes(b"email\nann@example.com\nb\xffb@example.com\n")
    err = io.StringIO()
    call_command("import_subscribers", str(source), stdout=io.StringIO(), stderr=err)
    assert "line 3: not a valid email address" in err.getvalue()
    assert list(Subscriber.objects.values_list("email", flat=True)) == ["ann@example.com"]


def test_the_import_command_explains_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        call_command("import_subscribers", str(tmp_path / "nope.csv"))


def test_the_import_command_streams_in_constant_memory(tmp_path, monkeypatch):
    """Memory does not grow with the number of rows: the peak allocation
    while importing 4,500 more rows grows by less than those rows would
    take if they were held (a Subscriber with its strings is well over
    1 KB: 4.5 MB). Batches of 100 here, so both runs go through many.
    tracemalloc sees every thread's allocations, and threads left by
    earlier tests (a heartbeat, a fake server) allocate now and then: so
    a margin of 1 MB rather than a ratio, and the lower of two runs."""
    import tracemalloc

    monkeypatch.setattr("subscriptions.csvio.BATCH_SIZE", 100)

    def peak(rows, run):
        source = tmp_path / f"{rows}-{run}.csv"
        source.write_text(
            "email,name\n" + "".join(f"r{rows}x{run}x{i}@example.com,R {i}\n" for i in range(rows))
        )
        tracemalloc.start()
        call_command("import_subscribers", str(source), "--confirmed", stdout=io.StringIO())
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small = min(peak(500, run) for run in range(2))
    large = min(peak(5_000, run) for run in range(2))
    assert large - small < 1_000_000, (small, large)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_the_commands_show_a_progress_bar_on_a_terminal_only(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("email\n" + "".join(f"r{i}@example.com\n" for i in range(2_500)))
    terminal = FakeTerminal()
    call_command(
        "import_subscribers", str(source), "--confirmed", stdout=io.StringIO(), stderr=terminal
    )
    drawn = terminal.getvalue()
    assert "100%|" in drawn and "| 2501/2501 [" in drawn and "lines/s]" in drawn  # rate, ETA
    terminal = FakeTerminal()
    call_command("export_subscribers", "-o", str(tmp_path / "out.csv"), stderr=terminal)
    drawn = terminal.getvalue()
    assert "100%|" in drawn and "| 2500/2500 [" in drawn and "rows/s]" in drawn

    not_a_terminal = io.StringIO()
    call_command("export_subscribers", stdout=io.StringIO(), stderr=not_a_terminal)
    assert not_a_terminal.getvalue() == ""
