"""`convert.py replay` as a user runs it on what they have: bad bytes, huge lines, pipes,
webhook batches, JSON documents, many rules; each alert located by file and line, compared
with a plain Python reference of the labelled events."""

from __future__ import annotations

import errno
import gzip
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from cases import EVENTS
from conftest import one_error_line, rule_alerts, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k8s_audit_detect import replay

ROOT = Path(__file__).resolve().parent.parent
LABELLED = sorted(EVENTS.glob("*.json"))  # match_* alert with the rule alone, nomatch_* do not


def labelled(n: int) -> tuple[dict[str, Any], bool]:
    """The n-th labelled event (cycling), with a unique auditID, and whether it alerts."""
    path = LABELLED[n % len(LABELLED)]
    event = json.loads(path.read_text())
    event["auditID"] = f"ev-{n}"
    return event, path.stem.startswith("match_")


def line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


@pytest.fixture(scope="module")
def pairs(token_rule, query_for) -> list[replay.ReplayRule]:
    return [replay.plain_rule(token_rule, query_for("duckdb"))]


def replay_in_process(
    names: list[str],
    pairs: list[replay.ReplayRule],
    fmt: str = "json",
    correlations: Any = (),
    bases: Any = (),
    prescan: replay.Prescan | None = None,
) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = replay.run_replay(names, pairs, out, err, fmt, correlations, bases, prescan)
    return code, [json.loads(x) for x in out.getvalue().split("\n") if x], err.getvalue()


def replay_shipped(
    tmp_path: Path, events: list[dict[str, Any]]
) -> tuple[int, list[dict[str, Any]], str]:
    """`convert.py replay` as shipped, its correlation rules too, over the events as one log."""
    from k8s_audit_detect.cli import load_rules, replay_queries

    shipped = replay_queries(load_rules([]))
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    return replay_in_process([str(log)], shipped.rules, "json", shipped.correlations, shipped.bases)


def replay_cli(
    *args: str, stdin: bytes | None = None, **kwargs: Any
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "convert.py", "replay", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        timeout=120,
        **kwargs,
    )


def alerts_of(stdout: bytes) -> list[dict[str, Any]]:
    """The TokenRequest rule's alerts (convert.py replay runs the correlation rules too)."""
    return rule_alerts(stdout.decode())


@dataclass
class DuckDBWatch:
    connections: list[Any] = field(default_factory=list)  # every connection made
    reads: list[str] = field(default_factory=list)  # every statement that reads an input


def watch_duckdb(monkeypatch, *settings: str) -> DuckDBWatch:
    """duckdb.connect replaced: each connection first given these SET statements, and every
    statement that reads an input (read_json) recorded."""
    import duckdb

    connect, watch = duckdb.connect, DuckDBWatch()

    class Watched:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.inner = connect(*args, **kwargs)
            for setting in settings:
                self.inner.execute(setting)
            watch.connections.append(self)

        def execute(self, sql: str, *args: Any) -> Any:
            if "read_json" in sql:
                watch.reads.append(sql)
            return self.inner.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    monkeypatch.setattr(duckdb, "connect", Watched)
    return watch


def write_end(fifo: Path, timeout: float = 60.0) -> BinaryIO:
    """The write end of a named pipe once a reader has opened it; an assertion error, not a
    wait forever, if none does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            assert error.errno == errno.ENXIO and time.monotonic() < deadline, "nobody read it"
            time.sleep(0.05)
            continue
        os.set_blocking(fd, True)
        return os.fdopen(fd, "wb")


def no_traceback(stderr: str | bytes) -> None:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text and "Error:" not in text and "CSV" not in text, text


# --- bad input costs only itself ------------------------------------------------------------


def test_one_invalid_byte_in_1000_events_loses_no_other_alert(tmp_path: Path, pairs) -> None:
    """On main, one byte that is not UTF-8 dropped every alert of the file (and exit 2)."""
    lines, expected = [], []
    for n in range(1000):
        event, alerts = labelled(n)
        lines.append(line(event))
        if alerts:
            expected.append((f"ev-{n}", n + 1))
    bad = next(n for n in range(500, 1000) if labelled(n)[1])  # an alerting event, broken
    lines[bad] = lines[bad].replace(b'"create"', b'"cr\xffeate"')
    expected.remove((f"ev-{bad}", bad + 1))
    log = tmp_path / "audit.log"
    log.write_bytes(b"\n".join(lines) + b"\n")
    code, alerts, err = replay_in_process([str(log)], pairs)
    assert [(a["auditID"], a["line"]) for a in alerts] == expected
    assert all(a["file"] == str(log) for a in alerts)
    assert f"{log}:{bad + 1}: not valid UTF-8 (byte 0xff at column" in err
    assert "999 events read, 1 line skipped" in err.splitlines()[-1]
    assert code == replay.EXIT_SKIPPED
    no_traceback(err)


@pytest.mark.parametrize("path", ["file", "stdin"])
def test_a_line_over_duckdbs_object_limit_costs_only_itself(tmp_path: Path, path: str) -> None:
    """A 40 MB requestObject (possible at the RequestResponse level) stopped DuckDB's reader
    and, on main, every alert of the file; read from a file it now makes replay read the file
    again as a stream, without writing any alert twice."""
    events = [labelled(n) for n in range(6)]
    attack = next(e for e, alerts in events if alerts)
    huge = dict(attack, auditID="huge", requestObject={"data": "x" * (40 * 2**20)})
    lines = [line(e) for e, _ in events[:3]] + [line(huge)] + [line(e) for e, _ in events[3:]]
    log = tmp_path / "audit.log"
    log.write_bytes(b"\n".join(lines) + b"\n")
    result = replay_cli(str(log)) if path == "file" else replay_cli("-", stdin=log.read_bytes())
    name = str(log) if path == "file" else "-"
    expected = [(e["auditID"], n) for n, (e, a) in enumerate(events, 1) if a]
    expected = [(i, n if n <= 3 else n + 1) for i, n in expected]
    assert [(a["auditID"], a["line"]) for a in alerts_of(result.stdout)] == expected
    stderr = result.stderr.decode()
    assert f"{name}:4: {len(lines[3]):,} bytes, over DuckDB's 16 MiB limit" in stderr
    assert "6 events read, 1 line skipped" in stderr.splitlines()[-1]
    assert result.returncode == replay.EXIT_SKIPPED
    no_traceback(stderr)


def test_bad_lines_are_reported_up_to_a_limit_then_counted(tmp_path: Path, pairs) -> None:
    event, _ = labelled(0)
    lines = [b"{not json" for _ in range(replay.MAX_REPORTED + 5)] + [line(event)]
    log = tmp_path / "audit.log"
    log.write_bytes(b"\n".join(lines))
    code, alerts, err = replay_in_process([str(log)], pairs)
    reported = [x for x in err.splitlines() if "malformed JSON" in x]
    assert len(reported) == replay.MAX_REPORTED
    assert f"replay: {log}: 5 more bad lines skipped" in err
    assert [a["line"] for a in alerts] == [len(lines)]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b'{"verb": "create",', "malformed JSON (Expecting property name"),
        (b'{"a": 1} {"b": 2}', "malformed JSON (Extra data at column 10)"),
        (b'["create"]', "an array, not a JSON object"),
        (b'"text"', "a string, not a JSON object"),
        (b"42", "a number, not a JSON object"),
        (b"{}", "a JSON object without any audit Event field"),
        (b'{"verb": "\xc3"}', "not valid UTF-8 (byte 0xc3 at column 11)"),
        (b'{"verb": "\\ud800"}', "a \\u escape that is not a character"),
        (b"\x00", "malformed JSON"),
        (b'{"kind": "EventList", "items": 3}', "an EventList whose items are not a list"),
    ],
)
def test_each_bad_line_says_what_is_wrong(tmp_path: Path, pairs, text: bytes, problem: str):
    event, _ = labelled(0)
    log = tmp_path / "audit.log"
    log.write_bytes(line(event) + b"\n" + text + b"\n" + line(event) + b"\n")
    code, alerts, err = replay_in_process([str(log)], pairs)
    assert f"{log}:2: {problem}" in err
    assert [a["line"] for a in alerts] == [1, 3]
    no_traceback(err)


# --- what users have: pipes, batches, documents ----------------------------------------------


def alerting_events(count: int) -> list[dict[str, Any]]:
    return [e for e, alerts in (labelled(n) for n in range(count)) if alerts]


def test_stdin(pairs) -> None:
    events = [labelled(n) for n in range(40)]
    data = b"".join(line(e) + b"\n" for e, _ in events)
    result = replay_cli("-", stdin=data)
    expected = [(e["auditID"], "-", n) for n, (e, a) in enumerate(events, 1) if a]
    assert [(a["auditID"], a["file"], a["line"]) for a in alerts_of(result.stdout)] == expected
    assert result.returncode == 0
    assert "40 events read" in result.stderr.decode()


def test_gzip_from_stdin_and_a_gzip_cut_short(tmp_path: Path) -> None:
    events = [labelled(n) for n in range(40)]
    data = gzip.compress(b"".join(line(e) + b"\n" for e, _ in events))
    whole = replay_cli("-", stdin=data)
    assert len(alerts_of(whole.stdout)) == sum(a for _, a in events)
    cut = tmp_path / "audit.log.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = replay_cli(str(cut))
    assert "gzip data corrupt or cut short; the rest was not read" in result.stderr.decode()
    assert result.returncode == replay.EXIT_SKIPPED
    no_traceback(result.stderr)


@pytest.mark.parametrize("damage", ["cut short", "trailing garbage"])
def test_a_broken_gzip_loses_no_whole_line_before_the_break(tmp_path: Path, pairs, damage):
    """What `gzip -dc` recovers of a gzip file that breaks off, every whole line of it, is
    evaluated, then the break is said. On main, the lines read into the block under way were
    lost with it: every line of a file under 64 MiB."""
    events = [labelled(n) for n in range(300)]
    packed = gzip.compress(b"".join(line(e) + b"\n" for e, _ in events))
    broken = packed[: len(packed) // 2] if damage == "cut short" else packed + b"garbage"
    path = tmp_path / "audit.log.gz"
    path.write_bytes(broken)
    recovered = zlib.decompressobj(31).decompress(broken)  # the reference: zlib, not gzip
    whole = recovered.count(b"\n")
    assert 0 < whole < 300 if damage == "cut short" else whole == 300
    code, alerts, err = replay_in_process([str(path)], pairs)
    expected = [(e["auditID"], n) for n, (e, a) in enumerate(events[:whole], 1) if a]
    assert [(a["auditID"], a["line"]) for a in alerts] == expected
    assert f"{whole:,} events read" in err.splitlines()[-1]
    assert f"{path}: gzip data corrupt or cut short; the rest was not read" in err
    assert code == replay.EXIT_SKIPPED


def test_a_stream_leaves_no_thread_or_file_behind(tmp_path: Path, pairs) -> None:
    """A stream's next block is read and written ahead by a thread of its own into one of two
    in-memory files: once replay returns, whether the stream ended or broke off (a gzip cut
    short), the thread has ended and the files are closed; the alerts before the break are
    all written, in order."""
    events = [labelled(n) for n in range(3000)]
    data = gzip.compress(b"".join(line(e) + b"\n" for e, _ in events))
    whole, cut = tmp_path / "whole.log.gz", tmp_path / "cut.log.gz"
    whole.write_bytes(data)
    cut.write_bytes(data[: len(data) // 2])
    before = set(os.listdir("/proc/self/fd"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(replay, "CHUNK", 64 * 1024)  # many blocks
        code, alerts, err = replay_in_process([str(cut), str(whole)], pairs)
    assert not [t for t in threading.enumerate() if t.name == "replay-read-ahead"]
    assert set(os.listdir("/proc/self/fd")) == before
    expected = [e["auditID"] for e, alerting in events if alerting]
    cut_alerts = [a["auditID"] for a in alerts if a["file"] == str(cut)]
    assert cut_alerts == expected[: len(cut_alerts)] and 0 < len(cut_alerts) < len(expected)
    assert [a["auditID"] for a in alerts if a["file"] == str(whole)] == expected
    assert "cut.log.gz: gzip data corrupt or cut short" in err
    assert code == replay.EXIT_SKIPPED


def test_a_stream_stopped_early_takes_nothing_from_the_next_input(
    tmp_path: Path, pairs, monkeypatch
) -> None:
    """DuckDB runs out of memory on the first block of a gzip file while the read-ahead
    thread is reading on: replay says so and goes on with the next file, every alert of which
    is found. (A thread still reading the first file's descriptor after replay closed it would
    read the next file, opened under the same number, and take its lines.)"""
    import duckdb

    events = [labelled(n) for n in range(6000)]
    data = gzip.compress(b"".join(line(e) + b"\n" for e, _ in events), compresslevel=0)
    first, second = tmp_path / "first.log.gz", tmp_path / "second.log.gz"
    first.write_bytes(data)
    second.write_bytes(data)
    monkeypatch.setattr(replay, "CHUNK", 2 << 20)  # blocks of two reads of the file (1 MiB)
    lines, read = replay.Replayer.lines, replay.FdReader.__call__
    reads = []

    def slow_after_the_first_read(self, size):  # the thread is reading when DuckDB fails
        reads.append(size)
        if len(reads) > 1 and os.path.samefile(f"/proc/self/fd/{self.fd}", first):
            time.sleep(0.3)
        return read(self, size)

    monkeypatch.setattr(replay.FdReader, "__call__", slow_after_the_first_read)

    def out_of_memory_in_the_first_file(self, state, source, cursor):
        if state.name == str(first):
            raise duckdb.OutOfMemoryException("out of memory (test)")
        return lines(self, state, source, cursor)

    monkeypatch.setattr(replay.Replayer, "lines", out_of_memory_in_the_first_file)
    code, alerts, err = replay_in_process([str(first), str(second)], pairs)
    assert [a["auditID"] for a in alerts] == [e["auditID"] for e, alerting in events if alerting]
    assert all(a["file"] == str(second) for a in alerts)
    assert f"{first}: DuckDB ran out of memory" in err
    assert code == replay.EXIT_SKIPPED


def test_a_named_pipe(tmp_path: Path, pairs) -> None:
    events = [labelled(n) for n in range(30)]
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with write_end(fifo) as pipe:
            for event, _ in events:
                pipe.write(line(event) + b"\n")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    code, alerts, err = replay_in_process([str(fifo)], pairs)
    writer.join(timeout=60)
    expected = [(e["auditID"], n) for n, (e, a) in enumerate(events, 1) if a]
    assert [(a["auditID"], a["line"]) for a in alerts] == expected
    assert code == 0, err


def test_process_substitution(tmp_path: Path) -> None:
    """`replay <(zcat audit.log.gz)`: the shell passes /dev/fd/N, a pipe."""
    events = [labelled(n) for n in range(30)]
    read, write = os.pipe()
    os.write(write, b"".join(line(e) + b"\n" for e, _ in events))
    os.close(write)
    try:
        result = replay_cli(f"/dev/fd/{read}", pass_fds=(read,))
    finally:
        os.close(read)
    assert len(alerts_of(result.stdout)) == sum(a for _, a in events)
    assert result.returncode == 0, result.stderr


def test_audit_webhook_batches_are_read_item_by_item(tmp_path: Path, pairs) -> None:
    """The webhook backend writes one EventList per line; on main they gave 0 alerts."""
    events = [labelled(n) for n in range(30)]
    single, *rest = events
    batches = [rest[:12], [], rest[12:]]
    log = tmp_path / "webhook.log"
    log.write_text(
        json.dumps(single[0])
        + "\n"
        + "".join(
            json.dumps(
                {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [e for e, _ in b]}
            )
            + "\n"
            for b in batches
        )
    )
    code, alerts, err = replay_in_process([str(log)], pairs)
    expected = [(single[0]["auditID"], 1, None)] if single[1] else []
    for n, batch in zip((2, 3, 4), batches, strict=True):
        expected += [(e["auditID"], n, k) for k, (e, a) in enumerate(batch) if a]
    assert [(a["auditID"], a["line"], a.get("item")) for a in alerts] == expected
    assert "30 events read" in err.splitlines()[-1]
    assert code == 0


def test_a_bad_item_in_a_batch_costs_only_itself(tmp_path: Path, pairs) -> None:
    event, _ = labelled(0)
    log = tmp_path / "webhook.log"
    log.write_text(json.dumps({"kind": "EventList", "items": [event, "oops", event]}) + "\n")
    code, alerts, err = replay_in_process([str(log)], pairs)
    assert [(a["line"], a["item"]) for a in alerts] == [(1, 0), (1, 2)]
    assert f"{log}:1: item 1: not an audit Event object (skipped)" in err
    assert "1 batch item skipped" in err.splitlines()[-1]


@pytest.mark.parametrize("shape", ["array", "array-one-a-line", "pretty", "array-of-batches"])
def test_json_documents(tmp_path: Path, pairs, shape: str) -> None:
    events = [labelled(n) for n in range(12)]
    plain = [e for e, _ in events]
    if shape == "array":
        text, expected = json.dumps(plain, indent=2), [(n, None) for n in range(12)]
    elif shape == "array-one-a-line":  # `[` and the first event on line 1: still an array
        text = "[" + ",\n".join(json.dumps(e) for e in plain) + "]\n"
        expected = [(n, None) for n in range(12)]
    elif shape == "pretty":
        text = "".join(json.dumps(e, indent=2) + "\n" for e in plain)
        expected = [(n, None) for n in range(12)]
    else:
        text = json.dumps(
            [{"kind": "EventList", "items": plain[:5]}, {"kind": "EventList", "items": plain[5:]}]
        )
        expected = [(0, k) for k in range(5)] + [(1, k) for k in range(7)]
    log = tmp_path / "audit.json"
    log.write_text(text)
    code, alerts, err = replay_in_process([str(log)], pairs)
    alerting = [where for where, (_, a) in zip(expected, events, strict=True) if a]
    assert [(a["record"], a.get("item")) for a in alerts] == alerting
    assert "12 events read" in err.splitlines()[-1]
    assert code == 0


def test_the_projects_own_pretty_printed_events(pairs) -> None:
    """tests/events/*.json, one pretty-printed event each: on main, a warning per line."""
    files = [str(p) for p in LABELLED]
    code, alerts, err = replay_in_process(files, pairs)
    assert sorted(a["file"] for a in alerts) == sorted(
        str(p) for p in LABELLED if p.stem.startswith("match_")
    )
    assert {a["record"] for a in alerts} == {0}
    assert code == 0, err


@pytest.mark.parametrize("shape", ["pretty", "array"])
def test_a_broken_json_document_is_read_up_to_the_fault_and_ends_only_that_file(
    tmp_path: Path, pairs, shape: str
) -> None:
    """The fault is located, the whole values before it are evaluated, the next file is read.
    On main, a document that stopped being JSON gave no event at all."""
    events = [labelled(n) for n in range(6)]
    texts = [json.dumps(e, indent=2) for e, _ in events]
    texts[3] = texts[3][:-10]  # the fourth value cut short: no longer JSON from there
    text = "\n".join(texts) if shape == "pretty" else "[\n" + ",\n".join(texts) + "\n]"
    broken = tmp_path / "broken.json"
    broken.write_text(text + "\n")
    fine = tmp_path / "fine.jsonl"
    fine.write_text(json.dumps(labelled(0)[0]) + "\n")
    code, alerts, err = replay_in_process([str(broken), str(fine)], pairs)
    expected = [(str(broken), n, e["auditID"]) for n, (e, a) in enumerate(events[:3]) if a]
    assert expected, "the values before the fault must include one that alerts"
    assert [(a["file"], a.get("record"), a["auditID"]) for a in alerts] == [
        *expected,
        (str(fine), None, labelled(0)[0]["auditID"]),
    ]
    assert f"{broken}: line " in err and "malformed JSON" in err
    assert "the rest of the file was not read" in err
    assert "4 events read" in err.splitlines()[-1]
    assert code == replay.EXIT_SKIPPED


@pytest.mark.parametrize(
    "first",
    [
        b"[2026-11-20T09:14:03Z] audit log start",
        b'["system:authenticated"]},"sourceIPs":["10.0.1.57"],"userAgent":"kubectl"}',
        b'[{"manager":"kube-controller-manager"}]}},"kind":"Event","stage":"ResponseComplete"}',
    ],
)
def test_a_log_that_starts_inside_a_line_is_read_line_by_line(tmp_path: Path, pairs, first):
    """A log copied from the middle of a line (`tail -c`, a rotation) can start with `[`. On
    main that made it one JSON array, and the whole file was lost at its first line."""
    events = [labelled(n) for n in range(40)]
    path = tmp_path / "audit.log"
    path.write_bytes(first + b"\n" + b"".join(line(e) + b"\n" for e, _ in events))
    code, alerts, err = replay_in_process([str(path)], pairs)
    expected = [(e["auditID"], n) for n, (e, a) in enumerate(events, 2) if a]
    assert [(a["auditID"], a["line"]) for a in alerts] == expected
    assert [x.split(": ", 2)[1] for x in err.splitlines() if x.endswith("(skipped)")] == [
        f"{path}:1"
    ]
    assert "40 events read, 1 line skipped" in err.splitlines()[-1]
    assert code == replay.EXIT_SKIPPED


# --- names are names -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a*.jsonl", "a[12].jsonl", "a?.jsonl", "a{1,2}.jsonl"])
def test_a_file_name_is_never_a_glob(tmp_path: Path, pairs, name: str) -> None:
    """On main, `a*.jsonl` read a1.jsonl and a2.jsonl as well, labelled with the wrong name."""
    for n in (1, 2):
        (tmp_path / f"a{n}.jsonl").write_text(json.dumps(alerting_events(40)[n]) + "\n")
    odd = tmp_path / name
    odd.write_text(json.dumps(alerting_events(40)[0]) + "\n")
    code, alerts, err = replay_in_process([str(odd)], pairs)
    assert [(a["file"], a["auditID"]) for a in alerts] == [
        (str(odd), alerting_events(40)[0]["auditID"])
    ]


def test_a_directory_has_its_own_message(tmp_path: Path) -> None:
    line_ = one_error_line(run(ROOT, "replay", str(tmp_path)))
    assert f"{tmp_path}: is a directory; pass the audit log files in it" in line_


def test_an_unreadable_file_has_its_own_message(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "audit.log"
    log.write_text("{}\n")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root reads everything
    with pytest.raises(replay.UserError, match="audit.log: permission denied"):
        replay.check_input(str(log))


def test_zstd_is_refused_with_what_to_do(tmp_path: Path) -> None:
    log = tmp_path / "audit.log.zst"
    log.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)
    line_ = one_error_line(run(ROOT, "replay", str(log)))
    assert f"{log}: zstd-compressed" in line_ and "zstd -dc" in line_


# --- all rules in one pass -----------------------------------------------------------------

RULES = {
    "denied": """
title: Denied token request
id: 11111111-1111-4111-8111-111111111111
logsource: {product: kubernetes, service: audit}
detection:
  selection:
    objectRef.subresource: token
    responseStatus.code: 403
  condition: selection
fields: [user.groups, sourceIPs]
level: low
""",
    "decision": """
title: Forbidden by RBAC
id: 22222222-2222-4222-8222-222222222222
logsource: {product: kubernetes, service: audit}
detection:
  selection:
    annotations.authorization.k8s.io/decision: forbid
  condition: selection
fields: [annotations.authorization.k8s.io/reason, requestObject.spec]
level: low
""",
    "bound": """
title: Token bound to a pod
id: 33333333-3333-4333-8333-333333333333
logsource: {product: kubernetes, service: audit}
detection:
  selection:
    requestObject.spec.boundObjectRef.kind: Pod
  filter:
    requestObject.spec.expirationSeconds|lt: 3600
  condition: selection and not filter
fields: [requestObject.spec.expirationSeconds, user.extra.authentication.kubernetes.io/pod-name]
level: low
""",
}


def reference(rule: str, event: dict[str, Any]) -> bool:
    """What each test rule means, in Python."""
    spec = (event.get("requestObject") or {}).get("spec") or {}
    if rule == "denied":
        ref = event.get("objectRef") or {}
        return (
            ref.get("subresource") == "token"
            and (event.get("responseStatus") or {}).get("code") == 403
        )
    if rule == "decision":
        return (event.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
    seconds = spec.get("expirationSeconds")
    bound = (spec.get("boundObjectRef") or {}).get("kind") == "Pod"
    return bound and not (isinstance(seconds, int) and seconds < 3600)


@pytest.fixture(scope="module")
def many_rules(pairs, tmp_path_factory) -> list[replay.ReplayRule]:
    from sigma.collection import SigmaCollection

    from k8s_audit_detect.cli import REPLAY_TARGET, convert_target, rule_stem, sigma_rules

    folder = tmp_path_factory.mktemp("rules")
    for name, text in RULES.items():
        (folder / f"{name}.yml").write_text(text)
    collection = SigmaCollection.load_ruleset([folder])
    queries = convert_target(REPLAY_TARGET, collection)
    return pairs + [replay.plain_rule(r, queries[rule_stem(r)]) for r in sigma_rules(collection)]


def test_every_rule_in_one_pass_over_the_input(tmp_path: Path, many_rules, monkeypatch):
    """Rules whose fields differ (a number, arrays, nested objects, a key with dots and
    slashes, an object read whole and through a path below it) evaluated by one query per
    input: on main, one read of the file per rule."""

    events = [labelled(n)[0] for n in range(3 * len(LABELLED))]
    for n, event in enumerate(events):  # vary what the rules test, whatever the label
        event.setdefault("user", {})["extra"] = {"authentication.kubernetes.io/pod-name": [f"p{n}"]}
        spec = {"boundObjectRef": {"kind": ["Pod", "Secret", None][n % 3], "name": f"x{n}"}}
        if n % 4:
            spec["expirationSeconds"] = [600, 3607, 86400][n % 3]
        event["requestObject"] = {"kind": "TokenRequest", "spec": spec}
        event.setdefault("responseStatus", {})["code"] = [201, 403][n % 2]
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    reads = watch_duckdb(monkeypatch).reads
    code, alerts, err = replay_in_process([str(log)], many_rules)
    assert len(reads) == 1
    got = {(a["rule"], a["auditID"]) for a in alerts}
    titles = {"denied": "Denied token request", "decision": "Forbidden by RBAC"}
    titles["bound"] = "Token bound to a pod"
    for key, title in titles.items():
        want = {e["auditID"] for e in events if reference(key, e)}
        assert {i for t, i in got if t == title} == want, key
        assert want, f"no labelled event exercises rule {key}"
    by_id = {e["auditID"]: e for e in events}
    for alert in alerts:
        event = by_id[alert["auditID"]]
        if alert["rule"] == "Denied token request":
            assert alert["user.groups"] == event["user"].get("groups")
            assert alert["sourceIPs"] == event.get("sourceIPs")
            assert alert["responseStatus.code"] == 403
        if alert["rule"] == "Forbidden by RBAC":
            spec = (event.get("requestObject") or {}).get("spec")
            assert json.loads(alert["requestObject.spec"] or "null") == spec
        if alert["rule"] == "Token bound to a pod":
            number = events.index(event)
            assert alert["user.extra.authentication.kubernetes.io/pod-name"] == [f"p{number}"]
    summary = err.splitlines()
    assert any(
        x.endswith("Forbidden by RBAC (22222222-2222-4222-8222-222222222222)") for x in summary
    )
    assert code == 0


# --- output --------------------------------------------------------------------------------


def test_table_for_a_person(tmp_path: Path, pairs) -> None:
    events = alerting_events(20)[:2]
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    code, _, _ = 0, None, None
    out, err = io.StringIO(), io.StringIO()
    code = replay.run_replay([str(log)], pairs, out, err, "table")
    rows = out.getvalue().splitlines()
    assert rows[0].split() == ["TIME", "RULE", "USER", "ACTION", "OBJECT", "WHERE"]
    assert len(rows) == 3
    assert rows[1].endswith(f"{log}:1") and rows[2].endswith(f"{log}:2")
    assert "create serviceaccounts/token" in rows[1]
    assert code == 0


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (["--env", "eks"], []),
        ([], ["--env", "eks"]),
        (["--format", "table"], []),
        ([], ["--format", "table"]),
    ],
)
def test_options_mean_the_same_before_and_after_replay(tmp_path: Path, before, after) -> None:
    """On main, `convert.py --env X replay FILE` silently ignored --env."""
    from cases import ENV_EVENTS

    quiet = [json.loads(p.read_text()) for p in sorted((ENV_EVENTS / "eks").glob("nomatch_*"))]
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in quiet + alerting_events(20)[:1]))
    options = before + after
    placed = subprocess.run(
        [sys.executable, "convert.py", *before, "replay", *after, str(log)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    reference_ = subprocess.run(
        [sys.executable, "convert.py", "replay", *options, str(log)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert placed.stdout == reference_.stdout and placed.returncode == reference_.returncode
    if "--env" in options:
        assert len(placed.stdout.splitlines()) == 1  # the platform's own minters are quiet
    else:
        assert placed.stdout.startswith("TIME")


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        (["-t", "splunk", "replay"], "-t/--target does not go with replay"),
        (["--check", "replay"], "--check does not go with replay"),
        (["--stdout", "replay"], "--stdout does not go with replay"),
        (["--format", "text", "replay"], "replay --format is json or table"),
        (["--format", "json", "replay", "--format", "table"], "--format given twice"),
        (["--format", "table"], "--format table goes with replay"),
    ],
)
def test_options_that_do_not_go_with_replay_are_refused(args: list[str], refused: str) -> None:
    result = subprocess.run(
        [sys.executable, "convert.py", *args, *(["x.log"] if "replay" in args else [])],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and refused in result.stderr, result.stderr


def test_closing_the_pipe_ends_quietly(tmp_path: Path) -> None:
    """`replay ... | head -1`: on main, a BrokenPipeError traceback."""
    attack = alerting_events(20)[0]
    log = tmp_path / "audit.log"
    log.write_text((json.dumps(attack) + "\n") * 20_000)
    script = f'set -o pipefail; "{sys.executable}" convert.py replay "{log}" | head -1'
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, timeout=120)
    assert len(result.stdout.splitlines()) == 1
    assert json.loads(result.stdout)["line"] == 1
    assert result.returncode == replay.EXIT_PIPE
    assert result.stderr == b""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_flushes_the_alerts_so_far(tmp_path: Path, signum: int) -> None:
    """Stopped while it waits on a pipe, replay writes the alerts of the file before it (on
    main, SIGTERM lost up to 8 KB of buffered alerts), sums up and exits 128 + the signal."""
    events = alerting_events(40)
    first = tmp_path / "first.log"
    first.write_text("".join(json.dumps(e) + "\n" for e in events))
    fifo = tmp_path / "live.fifo"
    os.mkfifo(fifo)
    child = subprocess.Popen(
        [sys.executable, "convert.py", "replay", str(first), str(fifo)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    with write_end(fifo) as pipe:  # once replay has opened it: first.log is done
        pipe.write(line(events[0])[:20])  # and replay waits for the rest of a line
        pipe.flush()
        time.sleep(0.5)
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=60)
    assert [a["auditID"] for a in alerts_of(stdout)] == [e["auditID"] for e in events]
    assert child.returncode == replay.EXIT_SIGNAL + signum
    text = stderr.decode()
    assert f"stopped by {signal.Signals(signum).name}" in text.splitlines()[-1]
    no_traceback(text)


def test_ctrl_c_while_the_rules_load_ends_quietly(tmp_path: Path, monkeypatch, capsys) -> None:
    """Ctrl-C before replay reads anything (the rules loading, converted or from the cache,
    the prescan's child running): one line, 130, no traceback, no child left."""
    from k8s_audit_detect import cli

    log = tmp_path / "audit.log"
    log.write_bytes(b"".join(line(e) + b"\n" for e in alerting_events(10)))
    monkeypatch.setattr(replay, "PRESCAN_SIZE", 0)
    children: list[int] = []
    enter = replay.Prescan.__enter__

    def noted(self: replay.Prescan) -> replay.Prescan:
        enter(self)
        children.append(self.pid)
        return self

    def interrupted(envs: list[str]) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(replay.Prescan, "__enter__", noted)
    monkeypatch.setattr(cli, "replay_plan", interrupted)
    assert cli.main(["replay", str(log)], root=ROOT) == replay.EXIT_SIGNAL + signal.SIGINT
    err = capsys.readouterr().err
    assert err == "convert.py: replay: stopped by SIGINT before reading\n"
    assert children and children[0] > 0
    with pytest.raises(ChildProcessError):
        os.waitpid(children[0], os.WNOHANG)  # reaped already


def test_a_closed_stdout_is_said_so(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"".join(line(e) + b"\n" for e in alerting_events(10)))
    result = subprocess.run(
        [sys.executable, "convert.py", "replay", str(log)],
        cwd=ROOT,
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )
    assert "standard output is closed" in one_error_line(result)


def test_a_progress_line_on_a_terminal(tmp_path: Path) -> None:
    """Inputs that take more than a few seconds show where replay is, on stderr, when stderr
    is a terminal."""
    import pty

    fifo = tmp_path / "slow.fifo"
    os.mkfifo(fifo)
    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "convert.py", "replay", str(fifo)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    with write_end(fifo) as pipe:
        for n in range(30):
            pipe.write(line(labelled(n)[0]) + b"\n")
            pipe.flush()
            time.sleep(0.15)
    child.wait(timeout=60)
    shown = b""
    with pytest.raises(OSError):
        while chunk := os.read(controller, 1 << 16):
            shown += chunk
    os.close(controller)
    assert b"\r\x1b[Kreplay: " + str(fifo).encode() + b": " in shown
    assert b"MiB read" in shown
    assert shown.rstrip().endswith(b"alerts")  # the summary, the progress line cleared


# --- lines and records, against a reference ---------------------------------------------------

KINDS = st.sampled_from(
    ["event"] * 6
    + ["batch", "stages", "no id", "blank", "spaces", "malformed", "invalid", "string", "empty"]
)


@st.composite
def logs(draw) -> tuple[bytes, list[tuple[str, int, int | None]], list[int], int]:
    """A log of mixed lines; the alerts (auditID, line, item) and bad lines it should give,
    and the events in it."""
    kinds = draw(st.lists(KINDS, min_size=1, max_size=25))
    crlf = draw(st.booleans())
    bom = draw(st.booleans())
    final_newline = draw(st.booleans())
    lines, alerts, bad, events, n = [], [], [], 0, 0
    for kind in kinds:
        number = len(lines) + 1  # the line this kind starts on
        if kind == "event":
            event, alerting = labelled(n := n + 1)
            lines.append(line(event))
            alerts += [(event["auditID"], number, None)] if alerting else []
            events += 1
        elif kind == "stages":  # two stages of one request, the same audit ID: the last alerts
            event, alerting = labelled(n := n + 1)
            lines += [line(dict(event, stage="RequestReceived")), line(event)]
            alerts += [(event["auditID"], number + 1, None)] if alerting else []
            events += 2
        elif kind == "no id":  # an event without an audit ID
            event, alerting = labelled(n := n + 1)
            del event["auditID"]
            lines.append(line(event))
            alerts += [(None, number, None)] if alerting else []
            events += 1
        elif kind == "batch":
            items = [labelled(n := n + 1) for _ in range(draw(st.integers(0, 3)))]
            lines.append(json.dumps({"kind": "EventList", "items": [e for e, _ in items]}).encode())
            alerts += [(e["auditID"], number, k) for k, (e, a) in enumerate(items) if a]
            events += len(items)
        elif kind in ("blank", "spaces"):
            lines.append(b"" if kind == "blank" else b" \t\x0b\x0c ")
        else:
            bad_lines = {"malformed": b'{"verb": ', "invalid": b'{"v": "\xfe"}', "string": b'"s"'}
            lines.append(bad_lines.get(kind, b"{}"))
            bad.append(number)
    data = (b"\r\n" if crlf else b"\n").join(lines) + (b"\n" if final_newline else b"")
    return (replay.BOM if bom else b"") + data, alerts, bad, events


PRESCANNED = ["prescanned", "prescan-failed", "changed-after-prescan", "prescan-without-fork"]


def scan_and_fail(self: replay.Prescan, out: int) -> None:
    """A prescan's child that dies part way through writing its numbers."""
    os.write(out, b"\0" * 5)
    raise OSError(errno.EIO, "input/output error")


@pytest.mark.parametrize("how", ["file", "gzip", "gzip-small-blocks", *PRESCANNED])
@settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(log=logs())
def test_lines_and_items_match_a_reference(tmp_path: Path, pairs, monkeypatch, how, log):
    """Blank lines (which DuckDB skips), CRLF, a byte-order mark, a missing final newline,
    batches and bad lines, read from a file (DuckDB reads it) and as a stream (in blocks;
    small ones cross line boundaries): every alert at its line and item, every bad line
    reported at its line, the events counted. A file's lines numbered by the prescan's child
    process as by a thread; and by a thread, the same, when the child fails, when the file
    changes after the prescan started, or without os.fork."""
    data, expected, bad, events = log
    path = tmp_path / f"log-{how}"
    path.write_bytes(gzip.compress(data) if how.startswith("gzip") else data)
    if how == "gzip-small-blocks":
        monkeypatch.setattr(replay, "CHUNK", 97)
        monkeypatch.setattr(replay, "CURSOR_BLOCK", 31)
    if how == "changed-after-prescan":
        path.write_bytes(b"{}\n" * (len(data) + 1))
    if how == "prescan-failed":
        monkeypatch.setattr(replay.Prescan, "_scan", scan_and_fail)
    if how == "prescan-without-fork":
        monkeypatch.delattr(os, "fork", raising=False)  # (every example of the test)
    if how in PRESCANNED:
        with replay.Prescan([str(path)], size=0) as prescan:
            if how == "changed-after-prescan":
                path.write_bytes(data)
            code, alerts, err = replay_in_process([str(path)], pairs, prescan=prescan)
            assert prescan.pid == 0  # reaped once read, not left for the rest of the run
        assert prescan.used == (how == "prescanned")  # the child's numbers, or a thread's
    else:
        code, alerts, err = replay_in_process([str(path)], pairs)
    assert [(a["auditID"], a["line"], a.get("item")) for a in alerts] == expected
    reported = [int(x.split(":")[2]) for x in err.splitlines() if x.endswith("(skipped)")]
    assert reported == bad
    read = f"{events:,} event{'' if events == 1 else 's'} read"
    assert f"{read}, {len(bad)} line" in err.splitlines()[-1]
    assert code == (replay.EXIT_SKIPPED if bad else replay.EXIT_OK)


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # the same limits each time
)
@given(
    lines=st.lists(
        st.one_of(st.integers(0, 12), st.integers(13, 60)).map(lambda n: b"x" * n),
        max_size=30,
    ),
    final_newline=st.booleans(),
    head_size=st.integers(0, 40),
    reads=st.lists(st.integers(1, 9), min_size=1, max_size=8),
)
def test_stream_blocks_match_a_reference(
    monkeypatch, lines: list[bytes], final_newline: bool, head_size: int, reads: list[int]
) -> None:
    """A stream's blocks (small limits: blocks of 25 bytes, reads of at most 9, lines over
    20 bytes too long), read in uneven pieces after a head of any size: put together, they are
    the input with each too-long line replaced by a placeholder holding its length, and every
    block but the last ends at a line's end."""
    monkeypatch.setattr(replay, "CHUNK", 25)
    monkeypatch.setattr(replay, "READ", 9)
    monkeypatch.setattr(replay, "MAX_OBJECT", 20)
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    expected = b"\n".join(b'"P:%d"' % len(x) if len(x) > 20 else x for x in data.split(b"\n"))
    head, source = data[:head_size], io.BytesIO(data[head_size:])
    sizes = iter(reads * (len(data) + 1))

    def readinto(view: memoryview) -> int:
        return source.readinto(view[: next(sizes)])

    blocks = [
        bytes(block[:length])
        for block, length in replay.line_blocks(readinto, lambda _: True, head, b'"P:')
    ]
    assert b"".join(blocks) == expected
    assert all(block.endswith(b"\n") for block in blocks[:-1])


def test_a_file_rewritten_in_place_after_the_prescan_is_scanned_again(
    tmp_path: Path, pairs
) -> None:
    """The same file, rewritten in place to the same size, its modification time set back (as
    a log tool might): the blank lines the prescan found are no longer where they were, and
    the alerts are at the lines DuckDB read them from."""
    events = [labelled(n) for n in range(20)]
    body = b"".join(line(e) + b"\n" for e, _ in events)
    log = tmp_path / "audit.log"
    log.write_bytes(b"\n\n\n" + body)
    before = log.stat()
    with replay.Prescan([str(log)], size=0) as prescan:
        time.sleep(0.05)  # past the clock tick that stamped the file's times
        with log.open("r+b") as rewrite:
            rewrite.write(body + b"\n\n\n")
        os.utime(log, ns=(before.st_atime_ns, before.st_mtime_ns))
        code, alerts, err = replay_in_process([str(log)], pairs, prescan=prescan)
    expected = [(e["auditID"], n) for n, (e, alerting) in enumerate(events, 1) if alerting]
    assert [(a["auditID"], a["line"]) for a in alerts] == expected
    assert not prescan.used


def test_convert_py_scans_a_files_lines_while_it_loads_the_rules(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """`convert.py replay` starts the line scan of a large plain file (here any size) in a
    child process before it loads and converts the rules, and numbers lines by it: every
    alert at its line, blank lines between the events."""
    from k8s_audit_detect.cli import main

    monkeypatch.setattr(replay, "PRESCAN_SIZE", 0)
    used: list[bool] = []
    leave = replay.Prescan.__exit__

    def noted(self: replay.Prescan, *exc: object) -> None:
        used.append(self.used)
        leave(self, *exc)

    monkeypatch.setattr(replay.Prescan, "__exit__", noted)
    events = [labelled(n) for n in range(30)]
    log = tmp_path / "audit.log"
    log.write_bytes(b"\n".join(line(e) + b"\n" * (n % 3) for n, (e, _) in enumerate(events)))
    lines = list(itertools.accumulate([1] + [1 + n % 3 for n in range(len(events) - 1)]))
    expected = [(e["auditID"], at) for (e, alerts), at in zip(events, lines, strict=True) if alerts]
    assert main(["replay", str(log)], root=ROOT) == 0
    found = [(a["auditID"], a["line"]) for a in alerts_of(capsys.readouterr().out.encode())]
    assert found == expected
    assert used == [True]


def test_each_alert_is_at_its_own_line(tmp_path: Path, pairs) -> None:
    """The request's earlier stage (same audit ID), its ID quoted in another field, duplicate
    lines, an event without an ID: each alert carries its own line."""
    attack = alerting_events(40)[0]
    quiet = [e for e, alerts in (labelled(n) for n in range(40)) if not alerts]
    quoting = dict(quiet[0], userAgent=attack["auditID"])  # its ID, but not as auditID
    received = dict(attack, stage="RequestReceived")  # the same request, a stage that is quiet
    lines = [quoting, received, attack, attack, quiet[1]]
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in lines))
    code, alerts, err = replay_in_process([str(log)], pairs)
    assert [(a["auditID"], a["line"]) for a in alerts] == [(attack["auditID"], n) for n in (3, 4)]
    anonymous = dict(attack)
    del anonymous["auditID"]
    log.write_text("".join(json.dumps(e) + "\n" for e in [attack, anonymous, attack]))
    code, alerts, err = replay_in_process([str(log)], pairs)
    assert [a["line"] for a in alerts] == [1, 2, 3]
    assert code == 0, err


def token_mints(count: int, accounts: int) -> list[dict[str, Any]]:
    """`count` granted token requests by one person (auditIDs burst-0...), for `accounts`
    service accounts in turn."""
    attack = json.loads((EVENTS / "match_human_user_kubectl_create_token.json").read_text())
    return [
        dict(
            attack,
            auditID=f"burst-{n}",
            requestURI=f"/api/v1/namespaces/prod/serviceaccounts/sa-{n % accounts}/token",
            responseStatus={"code": 201},
        )
        for n in range(count)
    ]


def test_correlations_come_from_the_same_single_read(tmp_path: Path, monkeypatch) -> None:
    """The shipped correlation rules run over the events their base rules match, kept as the
    one read of each input goes (main read every file once more for them): two files, two
    reads, a burst of token requests split across them is one correlated group, and a token
    minted in one file and used in the other is another (minted then used)."""
    from k8s_audit_detect.cli import load_rules, replay_queries

    shipped = replay_queries(load_rules([]))
    plain, correlated, bases = shipped.rules, shipped.correlations, shipped.bases
    assert correlated, "the repository ships correlation rules"
    attack = json.loads((EVENTS / "match_human_user_kubectl_create_token.json").read_text())
    burst = token_mints(60, accounts=6)
    token = "JTI=0d5bd0a5-4b8e-4d43-9c1e-2b7f1c3a6e58"
    burst[0]["annotations"] = attack["annotations"] | {
        "authentication.kubernetes.io/issued-credential-id": token
    }
    use = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": "use-1",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/prod/secrets?limit=500",
        "verb": "list",
        "user": {
            "username": "system:serviceaccount:prod:sa-0",
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/credential-id": [token]},
        },
        "sourceIPs": ["203.0.113.7"],
        "objectRef": {"resource": "secrets", "namespace": "prod", "apiVersion": "v1"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-11-20T09:20:00.000000Z",
    }
    logs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for log, part in zip(logs, (burst[:30], [use, *burst[30:]]), strict=True):
        log.write_text("".join(json.dumps(e) + "\n" for e in part))
    reads = watch_duckdb(monkeypatch).reads
    out, err = io.StringIO(), io.StringIO()
    code = replay.run_replay([str(log) for log in logs], plain, out, err, "json", correlated, bases)
    alerts = [json.loads(x) for x in out.getvalue().split("\n") if x]
    groups = [a for a in alerts if "correlation" in a]
    assert len(reads) == 2
    assert len([a for a in alerts if "correlation" not in a]) == 60
    assert any(a["correlation"] == "value_count" for a in groups), err.getvalue()
    ordered = [a for a in groups if a["correlation"] == "temporal_ordered"]
    assert [(a["group"], [e["auditID"] for e in a["events"]]) for a in ordered] == [
        ({"credential_id": token}, ["burst-0", "use-1"])
    ], err.getvalue()
    assert code == 0


def pod_token_uses(jti: str, addresses: list[list[str]]) -> list[dict[str, Any]]:
    """A kubelet minting a pod's token (its address list first), then the pod's requests
    with it, one a minute, each from the addresses given."""
    minted = {
        "kind": "Event",
        "auditID": "mint",
        "stage": "ResponseComplete",
        "verb": "create",
        "user": {"username": "system:node:ip-10-0-1-23"},
        "objectRef": {"resource": "serviceaccounts", "subresource": "token", "name": "deploy"},
        "responseStatus": {"code": 201},
        "annotations": {"authentication.kubernetes.io/issued-credential-id": jti},
        "sourceIPs": addresses[0],
        "requestReceivedTimestamp": "2026-03-02T09:00:00.000000Z",
    }
    uses = [
        {
            "kind": "Event",
            "auditID": f"use-{n}",
            "stage": "ResponseComplete",
            "verb": "get",
            "user": {
                "username": "system:serviceaccount:shop:deploy",
                "extra": {
                    "authentication.kubernetes.io/credential-id": [jti],
                    "authentication.kubernetes.io/pod-name": ["deploy-1"],
                },
            },
            "objectRef": {"resource": "configmaps"},
            "responseStatus": {"code": 200},
            "sourceIPs": ips,
            "requestReceivedTimestamp": f"2026-03-02T09:0{n}:00.000000Z",
        }
        for n, ips in enumerate(addresses[1:], 1)
    ]
    return [minted, *uses]


def correlation_alerts(tmp_path: Path, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in replay_shipped(tmp_path, events)[1] if "correlation" in a]


def test_an_event_without_the_counted_value_is_not_one_of_the_values(tmp_path: Path) -> None:
    """The kubelet's mint logged without an address, then the token used from three: three
    addresses, and the events listed are the three uses. On main the mint was listed too,
    with a null value, and the group's first_seen was its time."""
    events = pod_token_uses("JTI=1a", [[], ["10.0.0.1"], ["10.0.0.2"], ["10.0.0.3"]])
    (alert,) = correlation_alerts(tmp_path, events)
    assert alert["group"] == {"credential_id": "JTI=1a"} and alert["value_count"] == 3
    assert [e["auditID"] for e in alert["events"]] == ["use-1", "use-2", "use-3"]
    assert alert["first_seen"] == "2026-03-02 09:01:00"


def test_an_event_without_the_group_key_is_in_no_group(tmp_path: Path) -> None:
    """Three tokens whose credential-id lists start with null, each used from its own
    address: no token of them is used from three places. On main the three fell into one
    group keyed null, which alerted."""
    events = []
    for n, address in enumerate(["10.0.0.1", "10.0.0.2", "10.0.0.3"]):
        for event in pod_token_uses(f"JTI={n}", [[address], [address]]):
            event["auditID"] += f"-{n}"
            extra = event["user"].get("extra")
            if extra:
                extra["authentication.kubernetes.io/credential-id"] = [None, f"JTI={n}"]
            events.append(event)
    assert correlation_alerts(tmp_path, events) == []


def test_an_ordered_alert_lists_every_denial_before_the_grant(tmp_path: Path) -> None:
    """Probe then mint: three denied token requests, then one granted, all within the
    timespan. The alert starts at the first denial and lists all three (the accounts the
    prober wanted). On main it started at the last denial and listed only that one."""
    folder = Path(__file__).parent / "sequences" / "serviceaccount_token_probe_then_mint"
    lines = (folder / "match_three_denied_token_requests_then_one_granted.jsonl").read_text()
    events = [json.loads(x) for x in lines.splitlines() if x.strip()]
    denied = [e for e in events if e["responseStatus"]["code"] == 403]
    granted = [e for e in events if e["responseStatus"]["code"] == 201]
    assert len(denied) == 3 and len(granted) == 1
    (alert,) = correlation_alerts(tmp_path, events)
    assert alert["correlation"] == "temporal_ordered"
    listed = [e["auditID"] for e in alert["events"]]
    assert listed == [e["auditID"] for e in [*denied, *granted]]
    first = min(datetime.fromisoformat(e["requestReceivedTimestamp"]) for e in denied)
    assert datetime.fromisoformat(alert["first_seen"]) == first.replace(tzinfo=None)


def test_events_without_a_valid_time_are_left_out_of_the_correlations_and_said(
    tmp_path: Path,
) -> None:
    """A burst of token requests, two of them with a requestReceivedTimestamp that does not
    parse: the burst still alerts, without those two; stderr says how many were left out,
    the summary counts them, and the exit code says something was skipped. On main the
    correlations' query failed with a traceback."""
    burst = token_mints(5, accounts=5)
    burst[3]["requestReceivedTimestamp"] = "2026-11-31T09:00:00.000000Z"
    burst[4]["requestReceivedTimestamp"] = "at nine"
    code, alerts, err = replay_shipped(tmp_path, burst)
    (group,) = [a for a in alerts if a.get("correlation") == "value_count"]
    assert [e["auditID"] for e in group["events"]] == ["burst-0", "burst-1", "burst-2"]
    assert len([a for a in alerts if "correlation" not in a]) == 5  # the plain rule: all five
    lines = err.splitlines()
    assert (
        "replay: 2 events that the correlations' base rules match without a valid "
        "requestReceivedTimestamp: the correlations leave them out" in lines
    )
    assert "2 events without a time" in lines[-1]
    assert code == replay.EXIT_SKIPPED
    no_traceback(err)


def test_each_alert_is_at_its_own_line_when_duckdb_reads_on_many_threads(
    tmp_path: Path, pairs, monkeypatch
) -> None:
    """Replay numbers the records of a plain log by their row in a table DuckDB fills from a
    parallel read (main numbered them on one thread, WITH ORDINALITY): on 8 threads over
    7 MB of lines of varied length, every alert still carries its own line (each event's
    auditID names it). With DuckDB allowed to reorder (preserve_insertion_order off), this
    fails."""
    watch_duckdb(monkeypatch, "SET threads = 8")
    lines, expected = [], []
    for n in range(1, 3001):
        event, alerts = labelled(n)
        event["auditID"] = f"line-{n}"
        event["userAgent"] = "k" * (n * 7919 % 3000)
        lines.append(line(event))
        expected += [n] if alerts else []
    log = tmp_path / "audit.log"
    log.write_bytes(b"\n".join(lines) + b"\n")
    code, alerts, err = replay_in_process([str(log)], pairs)
    assert [a["line"] for a in alerts] == expected
    assert all(a["auditID"] == f"line-{a['line']}" for a in alerts)
    assert code == replay.EXIT_OK, err


def test_a_stream_that_pauses_is_evaluated_before_it_ends() -> None:
    """`kubectl logs -f | convert.py replay -`: the lines written so far are evaluated once
    the stream pauses (at most STREAM_WAIT later), not when it ends: the alert is on stdout
    while the writer still holds the pipe open."""
    import select

    event = alerting_events(10)[0]
    child = subprocess.Popen(
        [sys.executable, "convert.py", "replay", "-"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(line(event) + b"\n")
        child.stdin.flush()
        ready, _, _ = select.select([child.stdout], [], [], 15)
        assert ready, "no alert within 15 s while the stream was open"
        alert = json.loads(child.stdout.readline())
        assert (alert["auditID"], alert["line"]) == (event["auditID"], 1)
        assert child.poll() is None  # still reading the open stream
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    assert child.returncode == replay.EXIT_OK, child.stderr.read() if child.stderr else ""


def test_duckdb_out_of_memory_is_said_so(tmp_path: Path, pairs, monkeypatch) -> None:
    """DuckDB out of memory (here a limit of 8 MB) said as such, with what to do, not as
    'unreadable JSON' (main's words for any DuckDB error)."""
    watch_duckdb(monkeypatch, "SET memory_limit = '8MB'")
    log = tmp_path / "audit.log"
    log.write_bytes(b"".join(line(labelled(n)[0]) + b"\n" for n in range(200)))
    code, alerts, err = replay_in_process([str(log)], pairs)
    problems = [x for x in err.splitlines() if "the rest of it was not read" in x]
    assert problems == [
        f"replay: {log}: DuckDB ran out of memory; the rest of it was not read (replay it in "
        "parts, e.g. `split -l 1000000`, or on a machine with more memory)"
    ]
    assert code == replay.EXIT_SKIPPED
    no_traceback(err)


def test_duckdb_spills_into_a_directory_of_its_own_removed_after(
    tmp_path: Path, pairs, monkeypatch
) -> None:
    """Past its memory limit DuckDB writes its tables to its temp_directory, by default .tmp
    in the working directory (a user's repository): replay gives it a fresh directory under
    the system's temporary one, and removes it at the end."""
    import tempfile

    made = watch_duckdb(monkeypatch).connections
    spills: list[str] = []
    original_run = replay.Replayer.run

    def run(self: Any, inputs: Any) -> None:
        (directory,) = self.connection.execute(
            "SELECT current_setting('temp_directory')"
        ).fetchone()
        spills.append(directory)
        original_run(self, inputs)

    monkeypatch.setattr(replay.Replayer, "run", run)
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "audit.log"
    log.write_bytes(line(labelled(0)[0]) + b"\n")
    code, _, err = replay_in_process([str(log)], pairs)
    assert code == replay.EXIT_OK, err
    assert len(made) == 1 and len(spills) == 1
    assert Path(spills[0]).parent == Path(tempfile.gettempdir())
    assert not Path(spills[0]).exists()
    assert not (tmp_path / ".tmp").exists()


# A fork's own correlation rule, written as SigmaHQ writes Kubernetes rules: grouped by the
# short name apiGroup, its base rule listing triage fields of its own.
OWN_BASE = """title: RBAC object created
id: 5e0c8b1d-2f4a-4c6e-9a1b-7d3e5f7a9c11
name: own_rbac_object_created
status: test
description: The base rule of a fork's own correlation.
author: test
date: 2026-11-29
logsource: {product: kubernetes, service: audit}
detection:
  selection: {verb: create, apiGroup: rbac.authorization.k8s.io}
  condition: selection
fields: [%s]
level: informational
"""
OWN_CORRELATION = """title: RBAC objects created in a burst
id: 5e0c8b1d-2f4a-4c6e-9a1b-7d3e5f7a9c12
status: test
description: A fork's own correlation.
author: test
date: 2026-11-29
correlation:
  type: event_count
  rules: [own_rbac_object_created]
  group-by: [%s]
  timespan: 10m
  condition: {gte: 2}
level: medium
"""


@pytest.mark.parametrize(
    ("group_by", "listed", "beside"),
    [
        ("apiGroup", "user.username", None),  # SigmaHQ's short name for objectRef.apiGroup
        ("user.username", "user.username, objectRef.namespace, Verb", None),  # verb, other case
        # the whole object, beside a rule that reads a path in it
        ("user.username", "requestObject", "pod_with_host_path_volume"),
    ],
    ids=["grouped_by_a_short_name", "base_lists_a_field_in_another_case", "base_lists_an_object"],
)
def test_a_forks_own_correlation_rule(
    repo: Path, group_by: str, listed: str, beside: str | None
) -> None:
    """Replay keeps of a base rule's events what the correlation groups by, as the query names
    it, and reads of a base rule only what it tests: three RBAC objects created one minute
    apart are one group, the run is clean. (Keeping `apiGroup` as written, the correlation's
    query failed with a traceback; reading the base rule's listed fields, DuckDB refused
    `verb` beside `Verb` and read no event at all.)"""
    rules = repo / "sigma" / "rules"
    (rules / "own_rbac_object_created.yml").write_text(OWN_BASE % listed)
    (rules / "own_rbac_objects_created_in_a_burst.yml").write_text(OWN_CORRELATION % group_by)
    if beside:
        shutil.copy2(ROOT / "tests" / "rules" / f"{beside}.yml", rules)
    result = run(repo, "replay", str(rbac_objects_created(repo)))
    (group,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert group["rule"] == "RBAC objects created in a burst"
    assert [e["auditID"] for e in group["events"]] == ["rbac-0", "rbac-1", "rbac-2"]
    assert group["event_count"] == 3
    assert result.returncode == replay.EXIT_OK, result.stderr
    no_traceback(result.stderr)


@pytest.mark.parametrize(
    ("listed", "beside"),
    [
        ("Verb", None),  # verb, in another case
        ("User.Username", None),  # a top-level member in another case (user)
        ("objectRef.Namespace", None),  # a member below one
        ("annotations.Authentication.kubernetes.io/issued-credential-id", None),  # a key
        ("requestObject.Spec.nodeName", "pod_with_host_path_volume"),  # beside a short name's
        ("requestObject", "pod_with_host_path_volume"),  # whole, beside a short name's path
        ("requestObject.spec.volumes.hostPath.path", "pod_with_host_path_volume"),  # in a list
        # the same, and a path that differs from the short name's own only in case
        (
            "requestObject.spec.volumes.hostPath.path, requestObject.spec.Volumes",
            "pod_with_host_path_volume",
        ),
        ("kind.x", None),  # below a member that holds a string
    ],
)
def test_a_rule_that_lists(repo: Path, listed: str, beside: str | None) -> None:
    """A rule of a fork's own, first by name, whose `fields` list a path that DuckDB (whose
    names ignore case, where JSON's do not) would take for another path the rules read, or a
    whole object another rule reads a path of: every other rule's and correlation's alerts
    over the correlations' sequences are those of a run without it, and its own alerts are
    written, at their lines, with that field NULL where replay cannot read it as written.
    (Before, DuckDB refused the read, no event read; reading the first spelling only, the
    shipped rules read the user from `User` and gave 40 false alerts and no correlation.)"""
    rules = repo / "sigma" / "rules"
    if beside:
        shutil.copy2(ROOT / "tests" / "rules" / f"{beside}.yml", rules)
    log = rbac_objects_created(repo)
    sequences = sorted((ROOT / "tests" / "sequences").glob("*/*.jsonl"))
    log.write_text(log.read_text() + "".join(path.read_text() for path in sequences))
    without = run(repo, "replay", str(log))
    (rules / "a_lists_fields.yml").write_text(OWN_BASE % listed)
    result = run(repo, "replay", str(log))
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    own = [a for a in alerts if a.get("rule") == "RBAC object created"]
    others = [a for a in alerts if a.get("rule") != "RBAC object created"]
    assert others == [json.loads(line) for line in without.stdout.splitlines()]
    assert len([a for a in alerts if "correlation" in a]) >= 8  # the sequences' groups
    events = [json.loads(line) for line in log.read_text().splitlines()]
    expected = [
        (n, e)
        for n, e in enumerate(events, 1)
        if e.get("verb") == "create"
        and (e.get("objectRef") or {}).get("apiGroup") == "rbac.authorization.k8s.io"
    ]
    assert [(a["line"], a["auditID"]) for a in own] == [(n, e["auditID"]) for n, e in expected]
    assert len(expected) > 3  # the RBAC objects above, and the sequences'
    for name in listed.split(", "):
        if name != "requestObject":  # (an object read whole is its JSON text)
            assert [a[name] for a in own] == [as_written(e, name) for _, e in expected]
    assert result.returncode == without.returncode, result.stderr
    no_traceback(result.stderr)


def test_rules_that_test_keys_differing_only_in_case_are_refused(repo: Path) -> None:
    """Two annotation keys that differ only in case are two keys in the audit log, and one
    column to DuckDB: replay refuses in one line that names both rules, rather than read one
    key for the other (or, as before, read no event at all)."""
    rules = repo / "sigma" / "rules"
    for name, key in [("low", "example.com/flag"), ("high", "Example.com/Flag")]:
        rule = (OWN_BASE % "verb").replace("{verb: create, ", f"{{annotations.{key}: x, ")
        rule = rule.replace("5e0c8b1d-2f4a-4c6e-9a1b-7d3e5f7a9c11", str(uuid.uuid4()))
        rule = rule.replace("name: own_rbac_object_created", f"name: flag_{name}")
        rule = rule.replace("title: RBAC", f"title: {name} RBAC")
        (rules / f"flag_{name}.yml").write_text(rule)
    result = run(repo, "replay", str(rbac_objects_created(repo)))
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "'high RBAC object created' reads annotations.Example.com/Flag" in line, line
    assert "'low RBAC object created' reads annotations.example.com/flag" in line, line
    assert "cannot tell apart" in line


def as_written(event: dict[str, Any], field: str) -> Any:
    """The value at a path of an event, each member's name as written (JSON's names do not
    ignore case); None where there is none."""
    node: Any = event
    for part in replay.path_parts(field):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def rbac_objects_created(folder: Path) -> Path:
    """A log of three RBAC objects created by one person, one minute apart."""
    events = [
        {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": f"rbac-{n}",
            "stage": "ResponseComplete",
            "verb": "create",
            "user": {"username": "dev@example.com"},
            "objectRef": {
                "resource": "rolebindings",
                "namespace": f"team-{n}",
                "apiGroup": "rbac.authorization.k8s.io",
            },
            "responseStatus": {"code": 201},
            "requestReceivedTimestamp": f"2026-11-29T09:0{n}:00.000000Z",
            # a key that differs only in case from one a shipped correlation reads
            "annotations": {"Authentication.kubernetes.io/issued-credential-id": f"key-{n}"},
        }
        for n in range(3)
    ]
    log = folder / "audit.jsonl"
    log.write_text("".join(json.dumps(event) + "\n" for event in events))
    return log
