"""Replay Kubernetes audit logs through the rules' SQL on DuckDB, every rule in one pass.

Each rule's query is the duckdb target's, `SELECT * FROM k8s_audit WHERE <condition>`; the
condition, checked with DuckDB's own parser to be exactly that query's WHERE clause, becomes
one boolean column of a single query over a view `k8s_audit` with one column per audit Event
path any rule uses (named by the path). Each input is read once, whatever the number of
rules, by DuckDB's JSON reader with an explicit column list.

How an input is read:
- A plain file of one JSON value per line: DuckDB reads it itself, on every thread, with
  `ignore_errors`: a line it cannot read (invalid UTF-8, malformed JSON, not an object) comes
  out as a row of NULLs and costs only itself. The rows fill a table in input order, so a
  row's rowid is its record's number (Plan); a scan of the lines notes the blank lines
  DuckDB skips, which makes record numbers line numbers (LineScan): for a large file, in a
  child process forked before the rules load (Prescan), otherwise on a thread while DuckDB
  reads; a cursor shows what is wrong with a bad line. A line over DuckDB's
  object size limit stops its reader: the file is then read again as a stream, without
  repeating what was already written.
- A stream (`-`, a FIFO, process substitution) or a gzip file: blocks of whole lines, each
  written to an in-memory file that DuckDB reads; a line over the limit is replaced by a
  placeholder that is reported. Memory stays flat either way.
- A JSON array or pretty-printed events (one document, not lines): DuckDB reads the whole
  file (a stream is spooled to a temporary file first); a syntax error ends that file.
Lines or records `{"kind": "EventList", "items": [...]}` (the audit webhook's batches) are
read item by item.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import functools
import gzip
import io
import itertools
import json
import os
import queue
import select
import signal
import stat
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from k8s_audit_detect import UserError

if TYPE_CHECKING:
    from sigma.correlations import SigmaCorrelationRule
    from sigma.rule import SigmaRule

# Audit Event paths whose DuckDB type is not VARCHAR (kubernetes/apiserver
# pkg/apis/audit/v1/types.go: the status code is an integer; sourceIPs, the groups and every
# user.extra value are lists of strings; authentication/v1 TokenRequest for requestObject.spec).
FIELD_TYPES: dict[str, str] = {
    "responseStatus.code": "BIGINT",
    "requestObject.spec.expirationSeconds": "BIGINT",
    "user.groups": "VARCHAR[]",
    "impersonatedUser.groups": "VARCHAR[]",
    "sourceIPs": "VARCHAR[]",
    "requestObject.spec.audiences": "VARCHAR[]",
    # two members inside the pod spec's lists, for the short names below
    "requestObject.spec.volumes.hostPath.path": "VARCHAR",
    "requestObject.spec.containers.securityContext.capabilities.add": "VARCHAR[]",
}
# The members of an audit.k8s.io/v1 Event (kubernetes/apiserver pkg/apis/audit/v1/types.go), by
# their names in lower case, and `items`, which replay reads of an EventList.
EVENT_MEMBERS = {
    name.lower(): name
    for name in (
        "kind",
        "apiVersion",
        "level",
        "auditID",
        "stage",
        "requestURI",
        "verb",
        "user",
        "impersonatedUser",
        "sourceIPs",
        "userAgent",
        "objectRef",
        "responseStatus",
        "requestObject",
        "responseObject",
        "requestReceivedTimestamp",
        "stageTimestamp",
        "annotations",
        "items",
    )
}
# The members that hold objects (the others hold a string or a list of strings), and `items`.
EVENT_OBJECTS = frozenset(
    {"user", "impersonatedUser", "objectRef", "responseStatus", "requestObject"}
    | {"responseObject", "annotations", "items"}
)
# Maps whose keys hold dots and slashes: "annotations.authorization.k8s.io/decision" is the key
# "authorization.k8s.io/decision" of "annotations"; user.extra maps keys to lists of strings.
DOTTED_KEY_PARENTS = ("annotations", "user.extra", "impersonatedUser.extra")
PARENT_TYPES = {"user.extra": "VARCHAR[]", "impersonatedUser.extra": "VARCHAR[]"}
# Members that are lists of objects (the pod spec's), read as lists of structs.
OBJECT_LISTS = frozenset({"requestObject.spec.volumes", "requestObject.spec.containers"})
# SigmaHQ's short names (pySigma's ecs_kubernetes pipeline) as list columns of the view: the
# path of every hostPath volume, every capability a container adds.
SHORT_NAMES: dict[str, tuple[str, str]] = {
    "hostPath": (
        "requestObject.spec.volumes.hostPath.path",
        'list_filter(list_transform("requestObject"."spec"."volumes", lambda _v: '
        '_v."hostPath"."path"), lambda _p: _p IS NOT NULL)',
    ),
    "capabilities": (
        "requestObject.spec.containers.securityContext.capabilities.add",
        'flatten(list_transform("requestObject"."spec"."containers", lambda _c: '
        'coalesce(_c."securityContext"."capabilities"."add", [])))',
    ),
}
# SigmaHQ's short names the duckdb pipeline maps to an Event path (the column the query reads).
ALIASES = {"apiGroup": "objectRef.apiGroup"}
# Always carried into an alert, whatever the rule lists in `fields`.
ALERT_FIELDS = ("auditID", "stage", "requestReceivedTimestamp")
# What --format table shows, read whatever the rules use.
TABLE_FIELDS = (
    "requestReceivedTimestamp",
    "user.username",
    "verb",
    "objectRef.resource",
    "objectRef.subresource",
    "objectRef.namespace",
    "objectRef.name",
)
FORMATS = ("json", "table")
VIEW = "k8s_audit"
ROWS = '"replay:rows"'  # one plan query's result (Plan)
# a row's alerts as fetched: only those it has, each numbered by its rule (row_alerts); no NULL
# for each rule it does not match to fetch and step over (0.05 s less for 80,000 alerts)
ALERTS = (
    'list_filter(list_transform("replay:alerts", lambda a, i: CASE WHEN a IS NOT NULL THEN '
    "(i - 1)::VARCHAR || a END), lambda a: a IS NOT NULL)"
)
KEPT = '"replay:kept"'  # the base rules' events of earlier queries (VIEW: those and the last's)
MAX_REPORTED = 20  # bad lines reported one by one per input, then counted
MAX_OBJECT = 16 * 1024 * 1024  # DuckDB's read_json maximum_object_size (its default)
CHUNK = 64 * 1024 * 1024  # bytes of whole lines per block when reading a stream
READ = 1024 * 1024  # bytes a stream is read by: small reads reuse memory, large ones fault it in
CURSOR_BLOCK = 4 * 1024 * 1024  # bytes the line cursor reads at a time
PRESCAN_SIZE = 64 * 1024 * 1024  # a plain file this large is scanned during start-up (Prescan)
STREAM_WAIT = 1.0  # seconds a slow stream may keep complete lines waiting
BATCH = 2048
PROGRESS_AFTER = 2.0  # seconds before a progress line shows (stderr a terminal only)
WHITESPACE = b" \t\n\r\x0b\x0c"  # a line of only these is blank: DuckDB's reader skips it
BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
REFUSED_COMPRESSION = {  # magic bytes of compressions replay leaves to their own tools
    b"\x28\xb5\x2f\xfd": ("zstd", "zstd -dc"),
    b"BZh": ("bzip2", "bzip2 -dc"),
    b"\xfd7zXZ\x00": ("xz", "xz -dc"),
}
NEWLINE_DELIMITED, ARRAY, UNSTRUCTURED = "newline_delimited", "array", "unstructured"

# Exit codes of `convert.py replay` (README: "Replay your own audit logs").
EXIT_OK = 0  # every input read to the end, with or without alerts
EXIT_SKIPPED = 1  # finished, but lines, batch items, the rest of a file or, for the correlations,
# events without a valid time were skipped (stderr)
EXIT_USAGE = 2  # bad usage or an input that cannot be opened: nothing was read
EXIT_PIPE = 141  # stdout was closed (128 + SIGPIPE); the alerts until then were written
EXIT_SIGNAL = 128  # + the signal (130 Ctrl-C, 143 SIGTERM); the alerts until then flushed


# ---------------------------------------------------------------------------------------------
# Rules: fields, conditions, the one query


def rule_fields(rule: SigmaRule) -> tuple[list[str], list[str]]:
    """The audit paths a rule tests in its detection, then ALERT_FIELDS; and the others it
    lists in `fields`, for its alerts."""
    found = detection_fields(rule)
    found += [f for f in ALERT_FIELDS if f not in found]
    return found, [f for f in dict.fromkeys(rule.fields or []) if f not in found]


def detection_fields(rule: SigmaRule) -> list[str]:
    """The audit paths a rule tests in its detection."""
    found: list[str] = []

    def walk(detection: Any) -> None:
        for item in detection.detection_items:
            if hasattr(item, "detection_items"):
                walk(item)
            elif item.field and ALIASES.get(item.field, item.field) not in found:
                found.append(ALIASES.get(item.field, item.field))

    for detection in rule.detection.detections.values():
        walk(detection)
    return found


def path_parts(field: str) -> list[str]:
    """The JSON members a Sigma field name walks: annotations.<key with dots> is two."""
    for parent in sorted(DOTTED_KEY_PARENTS, key=len, reverse=True):
        if field.startswith(parent + ".") and len(field) > len(parent) + 1:
            return [*parent.split("."), field[len(parent) + 1 :]]
    return field.split(".")


def field_type(field: str) -> str:
    parent = next((p for p in DOTTED_KEY_PARENTS if field.startswith(p + ".")), "")
    return FIELD_TYPES.get(field, PARENT_TYPES.get(parent, "VARCHAR"))


def json_columns(fields: Iterable[str], whole: Iterable[str] = ()) -> dict[str, str]:
    """DuckDB read_json `columns`: the top-level members those paths need, with their types.
    A member read both whole and through a path below it, or named in `whole`, is read as
    JSON."""
    tree: dict[str, Any] = {}
    as_json: set[str] = set(whole)
    for name in fields:
        name = SHORT_NAMES[name][0] if name in SHORT_NAMES else name
        parts = path_parts(name)
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # a path above this one is read whole
                as_json.add(parts[0])
                break
        else:
            if isinstance(node.setdefault(parts[-1], field_type(name)), dict):
                as_json.add(parts[0])

    def sql_type(node: Any, path: str) -> str:
        if isinstance(node, str):
            return node
        members = ", ".join(
            f"{_ident(name)} {sql_type(child, f'{path}.{name}')}" for name, child in node.items()
        )
        return f"STRUCT({members})" + ("[]" if path in OBJECT_LISTS else "")

    return {
        name: "JSON" if name in as_json else sql_type(node, name) for name, node in tree.items()
    }


def _clash(a: str, b: str) -> bool:
    """Whether DuckDB, whose names ignore case, would take one path for the other: they differ
    first in the case of a member's name (JSON's names, and so the audit log's, do not
    ignore it)."""
    for x, y in zip(path_parts(a), path_parts(b), strict=False):
        if x != y:
            return x.lower() == y.lower()
    return False


def _refuse_clashes(readers: dict[str, str]) -> None:
    """UserError if two paths replay reads by name (`readers`: each path and a rule that reads
    it) clash (_clash): neither could be read for what it is."""
    for a, b in itertools.combinations(readers, 2):
        if _clash(a, b):
            raise UserError(
                f"replay: {readers[a]!r} reads {a} and {readers[b]!r} reads {b}, which DuckDB "
                "cannot tell apart (its names ignore case): spell the field as the audit log "
                "does, or leave one of the rules out of replay"
            )


def _through_a_list(field: str) -> bool:
    """Whether a path goes on inside a list of objects (replay reads those only through the
    short names, SHORT_NAMES)."""
    return any(field.startswith(f"{path}.") for path in OBJECT_LISTS)


def column_expression(field: str, columns: dict[str, str]) -> str:
    """How the view reads one audit path out of the JSON columns."""
    if field in SHORT_NAMES:
        path, expression = SHORT_NAMES[field]
        root = path_parts(path)[0]
        if columns.get(root) == "JSON":  # read whole too: its members through a cast
            typed = f"(TRY_CAST({_ident(root)} AS {json_columns([path])[root]}))"
            expression = expression.replace(_ident(root), typed, 1)
        return expression
    parts = path_parts(field)
    if columns.get(parts[0]) != "JSON":
        return ".".join(_ident(part) for part in parts)
    if len(parts) == 1:
        return f"CAST({_ident(parts[0])} AS VARCHAR)"
    path = _literal("$." + ".".join(json.dumps(part) for part in parts[1:]))
    kind = field_type(field)
    if kind == "VARCHAR":
        return f"json_extract_string({_ident(parts[0])}, {path})"
    return f"TRY_CAST(json_extract({_ident(parts[0])}, {path}) AS {kind})"


@dataclass(frozen=True)
class ReplayRule:
    """A converted rule as replay takes it, plain data without pySigma's objects (what
    `convert.py replay` keeps between runs, k8s_audit_detect/conversion_cache.py): the rule's
    identity for its alerts and the summary, the audit paths it reads, its duckdb query and,
    for a correlation rule, its type (event_count, value_count, temporal, temporal_ordered)."""

    id: str
    title: str
    level: str | None
    fields: tuple[str, ...]  # a plain rule's: what it tests and ALERT_FIELDS (rule_fields); a
    # correlation's: what replay keeps of its base rules' events for it (correlation_rule)
    query: str
    correlation: str | None = None
    listed: tuple[str, ...] = ()  # a plain rule's other `fields`, for its alerts (rule_fields)

    @classmethod
    def of(
        cls,
        rule: SigmaRule | SigmaCorrelationRule,
        query: str,
        fields: Iterable[str],
        correlation: str | None = None,
        listed: Iterable[str] = (),
    ) -> ReplayRule:
        level = rule.level.name.lower() if rule.level else None
        return cls(
            str(rule.id), rule.title, level, tuple(fields), query, correlation, tuple(listed)
        )


def plain_rule(rule: SigmaRule, query: str) -> ReplayRule:
    """A plain rule (not a correlation) and its duckdb query, as replay takes them."""
    tested, listed = rule_fields(rule)
    return ReplayRule.of(rule, query, tested, listed=listed)


def base_rule(rule: SigmaRule, query: str) -> ReplayRule:
    """A correlation's base rule and its duckdb query, as replay takes them: it marks the
    events it matches and writes no alert of its own, so it reads only what it tests (not the
    fields it lists for its alerts)."""
    return ReplayRule.of(rule, query, detection_fields(rule))


@dataclass(frozen=True)
class Rule:
    """One rule as replay runs it: its condition and the fields its alerts carry."""

    id: str
    title: str
    level: str | None
    fields: tuple[str, ...]
    condition: str
    listed: tuple[str, ...] = ()


def rule_condition(query: str, connection: Any) -> str:
    """The WHERE clause of a duckdb-target query, checked with DuckDB's parser to be exactly
    that: `SELECT * FROM k8s_audit WHERE (<it>)` parses to the same statement."""
    prefix = f"SELECT * FROM {VIEW} WHERE "
    query = query.strip()
    condition = query[len(prefix) :]
    if query.startswith(prefix) and _ast(query, connection) == _ast(
        f"{prefix}({condition})", connection
    ):
        return condition
    raise UserError(
        f"replay: a duckdb query is not `{prefix}<condition>`, so it cannot be evaluated in "
        f"one pass with the other rules: {' '.join(query.split())[:160]}"
    )


def _ast(sql: str, connection: Any) -> Any:
    (text,) = connection.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()

    def strip(node: Any) -> Any:  # source positions differ, the statement does not
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("query_location")}
        return [strip(v) for v in node] if isinstance(node, list) else node

    return strip(json.loads(text))


def compile_rules(rules: Sequence[ReplayRule], connection: Any) -> list[Rule]:
    return [
        Rule(
            id=rule.id,
            title=rule.title,
            level=rule.level,
            fields=rule.fields,
            condition=rule_condition(rule.query, connection),
            listed=rule.listed,
        )
        for rule in rules
    ]


class Plan:
    """The one query that evaluates every rule over an input, its result kept in the table
    `ROWS`. With correlation rules, it also marks the events each of their base rules matches
    (`bases`, each its own flag: base_flag) and carries those events' flags and the fields the
    correlations read of them (`keep`), which the correlations then read (Replayer.keep).

    Records are numbered in one of two ways. Lines (no batch seen): DuckDB reads the input on
    every thread, and the table holds one row per record in input order, so that a row's
    `rowid` (plus one) is its record's number; a row's payload is NULL unless replay handles
    or keeps it. Batches and documents: `WITH ORDINALITY` numbers the records (on one thread),
    and the table holds only the rows replay handles or keeps. (DuckDB keeps the rows of a read
    in input order, and a table's `rowid` follows it, while `preserve_insertion_order` is on:
    duckdb.org/docs/2.0/sql/dialect/order_preservation.)"""

    def __init__(
        self,
        rules: list[Rule],
        sentinel: str,
        table: bool = False,
        bases: Iterable[Rule] = (),
        keep: Iterable[str] = (),
    ) -> None:
        self.rules = rules
        self.sentinel = sentinel  # the kind of the record that ends each read
        self.table = table
        self.bases = list(bases)
        self.flags = [base_flag(n) for n in range(len(self.bases))]  # each base rule's column
        self.keep = list(keep)
        readers = {}  # each path read by name, and a rule that reads it
        for rule in [*rules, *self.bases]:
            readers.update({f: rule.title for f in rule.fields if f not in readers})
        for f in [*(TABLE_FIELDS if table else ()), *self.keep]:
            readers.setdefault(f, "a correlation rule" if f in self.keep else "--format table")
        _refuse_clashes(readers)
        self.fields = list(readers)
        # The fields only listed for alerts, each read as written. One that no Event can hold
        # is NULL in alerts: an Event member in another case, a member of no Event whose name
        # DuckDB would take for another member's, a path below a member that holds a string,
        # a path inside a list of objects. One that DuckDB would take for another path read
        # (_clash) is read under a name of its own, out of its member read as JSON.
        listed = [f for f in dict.fromkeys(f for r in rules for f in r.listed) if f not in readers]
        read = [*self.fields, *(SHORT_NAMES[f][0] for f in self.fields if f in SHORT_NAMES)]
        roots = [path_parts(f)[0] for f in [*read, *listed]]

        def unreadable(field: str) -> bool:
            parts = path_parts(field)
            if parts[0].lower() in EVENT_MEMBERS:
                misspelled = EVENT_MEMBERS[parts[0].lower()] != parts[0]
            else:
                misspelled = any(_clash(parts[0], other) for other in roots)
            below_a_value = len(parts) > 1 and parts[0] not in EVENT_OBJECTS
            return misspelled or below_a_value or _through_a_list(field)

        self.unread = {f for f in listed if unreadable(f)}
        listed = [f for f in listed if f not in self.unread]
        self.aliases: dict[str, str] = {}  # a listed field: its column
        whole: set[str] = set()  # the members read as JSON for those
        for f in listed:
            if any(_clash(f, other) for other in [*read, *listed] if other != f):
                self.aliases[f] = f"replay:l{len(self.aliases)}"
                whole.add(path_parts(f)[0])
            else:
                self.fields.append(f)
        self.columns = json_columns([*self.fields, *self.aliases], whole)

    @staticmethod
    def record(by_rowid: bool) -> str:
        """A row's record number in the table."""
        return "(rowid + 1)" if by_rowid else '"replay:rec"'

    def rows(self, by_rowid: bool) -> str:
        """The rows replay handles, from the table, in input order: record, batch item, batch
        size, kind, bad, the row's alerts (`row_alerts`), [the table's fields]."""
        keys = (
            f'{self.record(True)} AS "replay:rec", NULL::BIGINT AS "replay:item", '
            'NULL::BIGINT AS "replay:n"'
            if by_rowid
            else '"replay:rec", "replay:item", "replay:n"'
        )
        shown = "".join(f", {_ident('replay:t:' + f)}" for f in TABLE_FIELDS) if self.table else ""
        return (
            f'SELECT {keys}, "replay:kind", "replay:bad", {ALERTS}{shown} FROM {ROWS} '
            'WHERE "replay:shown"'  # in rowid order, as preserve_insertion_order keeps it
        )

    def kept(self, by_rowid: bool, before: int | None = None) -> str:
        """Each base rule's flag and the correlations' fields, named by their paths, of the
        table's rows that a base rule matches (of records before `before`)."""
        kept = [f"{_ident('replay:c:' + f)} AS {_ident(f)}" for f in self.keep]
        columns = ", ".join([*self.flags, *kept])
        where = '"replay:base"'
        if before is not None:
            where += f" AND {self.record(by_rowid)} < {before}"
        return f"SELECT {columns} FROM {ROWS} WHERE {where}"

    def sql(self, sources: list[str], fmt: str, batches: bool, after: int) -> str:
        """The query whose result is the table (see the class): columns "replay:shown",
        "replay:kind", "replay:bad", "replay:alerts" (in a shown row, the list of each rule's
        alert JSON or NULL), [the table's fields], [with correlation rules "replay:base",
        each base rule's flag and the kept fields]; with batches also "replay:rec",
        "replay:item", "replay:n", of records after `after`. A row is shown if it has an alert,
        is bad, is the first row of a batch, the end sentinel, or (reading records whole) an
        EventList."""
        members = {**self.columns, "kind": self.columns.get("kind", "VARCHAR")}
        event = "STRUCT(" + ", ".join(f"{_ident(n)} {t}" for n, t in members.items()) + ")"
        read = {**members, "items": f"{event}[]"} if batches else members
        columns = ", ".join(f"{_literal(n)}: {_literal(t)}" for n, t in read.items())
        reader = (
            f"read_json([{', '.join(_literal(s) for s in sources)}], format = {_literal(fmt)}, "
            "records = true, ignore_errors = true, compression = 'none', "
            f"maximum_object_size = {MAX_OBJECT}, columns = {{{columns}}})"
        )
        if batches:  # one row per event: a record's own, or each item of its batch
            keys = '"replay:rec", "replay:item", "replay:n", "replay:kind"'
            pack = ", ".join(f"{_ident(n)} := {_ident(n)}" for n in members)
            entry = f"STRUCT(i BIGINT, e {event})"
            base = (
                'SELECT "replay:rec", w.i AS "replay:item", "replay:n", "replay:kind", '
                'UNNEST(w.e) FROM (SELECT ordinality AS "replay:rec", kind AS "replay:kind", '
                'len(items) AS "replay:n", UNNEST(CASE '
                f"WHEN items IS NULL THEN [{{'i': NULL, 'e': struct_pack({pack})}}::{entry}] "
                f"WHEN len(items) = 0 THEN [{{'i': -1, 'e': NULL}}::{entry}] "
                "ELSE list_transform(items, lambda x, i: {'i': i - 1, 'e': x}) END) AS w "
                f"FROM {reader} WITH ORDINALITY)"
            )
        else:  # one row per record, numbered by the table's rowid
            keys = '"replay:kind"'
            names = ", ".join(_ident(n) for n in self.columns)
            base = f'SELECT kind AS "replay:kind", {names} FROM {reader}'
        view = ", ".join(
            f"{column_expression(f, self.columns)} AS {_ident(self.aliases.get(f, f))}"
            for f in [*self.fields, *self.aliases]
        )
        bad = " AND ".join(f"{_ident(f)} IS NULL" for f in self.fields) or "false"
        flags = "".join(
            f', {_flag(rule.condition)} AS "replay:r{n}"' for n, rule in enumerate(self.rules)
        )
        flags += "".join(
            f", {_flag(base.condition)} AS {flag}"
            for base, flag in zip(self.bases, self.flags, strict=True)
        )
        either = " OR ".join(self.flags)
        matched = f', ({either}) AS "replay:base"' if self.bases else ""  # by any base rule
        wanted = "".join(f' OR "replay:r{n}"' for n in range(len(self.rules)))
        kinds = ", ".join(_literal(k) for k in [self.sentinel, *([] if batches else ["EventList"])])
        first = ' OR "replay:item" <= 0' if batches else ""
        shown = f'"replay:bad"{wanted}{first} OR "replay:kind" IN ({kinds})'
        # one list column, not a column per rule: the table holds a row per record (fewer columns
        # to write and read: 0.1 s less of 1.6 s with every rule over 1,000,000 events)
        alerts = ", ".join(
            f'CASE WHEN "replay:r{n}" THEN json_object('
            + ", ".join(
                f"{_literal(f)}, {'NULL' if f in self.unread else _ident(self.aliases.get(f, f))}"
                for f in [*rule.fields, *rule.listed]
            )
            + ") END"
            for n, rule in enumerate(self.rules)
        )
        alerts = f', CASE WHEN "replay:shown" THEN [{alerts}] END AS "replay:alerts"'

        def when(flag: str, field: str, prefix: str) -> str:  # NULL in rows that need it not
            value = _ident(field) if batches else f"CASE WHEN {flag} THEN {_ident(field)} END"
            return f", {value} AS {_ident(prefix + field)}"

        table = "".join(when('"replay:shown"', f, "replay:t:") for f in TABLE_FIELDS if self.table)
        kept = ""
        if self.bases:
            kept = (
                ', "replay:base"'
                + "".join(f", {flag}" for flag in self.flags)
                + "".join(when('"replay:base"', f, "replay:c:") for f in self.keep)
            )
        kind = '"replay:kind"' if batches else 'CASE WHEN "replay:shown" THEN "replay:kind" END'
        evaluated = (
            f'SELECT *{flags} FROM (SELECT *, ({bad}) AS "replay:bad" FROM '
            f"(SELECT {keys}, {view} FROM ({base}))) AS {VIEW}"
        )
        numbers = '"replay:rec", "replay:item", "replay:n", ' if batches else ""
        select = (
            f'SELECT {numbers}"replay:shown", {kind} AS "replay:kind", "replay:bad"'
            f'{alerts}{table}{kept} FROM (SELECT *, ({shown}) AS "replay:shown"{matched} FROM '
            f"({evaluated})"
        )
        if not batches:
            return select + ")"
        kept_too = ' OR "replay:base"' if self.bases else ""
        return f'{select} WHERE "replay:rec" > {after}) WHERE "replay:shown"{kept_too}'


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Input:
    """One name given to replay: a regular file (gzip or not), or a stream."""

    name: str
    regular: bool
    gzip: bool = False


def check_input(name: str) -> Input:
    """What the name is, or one line saying why it cannot be read (before anything is)."""
    if name == "-":
        return Input(name, regular=False)
    try:
        info = os.stat(name)
        if stat.S_ISDIR(info.st_mode):
            raise UserError(
                f"replay: {name}: is a directory; pass the audit log files in it "
                f"(e.g. {name.rstrip('/')}/*.log)"
            )
        if not os.access(name, os.R_OK):
            raise PermissionError(13, "permission denied")
        if not stat.S_ISREG(info.st_mode):
            return Input(name, regular=False)  # a FIFO, /dev/stdin, <(command)
        with open(name, "rb") as handle:
            magic = handle.read(6)
    except FileNotFoundError:
        raise UserError(f"replay: {name}: no such file") from None
    except PermissionError:
        raise UserError(f"replay: {name}: permission denied (not readable by this user)") from None
    except OSError as error:
        raise UserError(f"replay: {name}: {(error.strerror or str(error)).lower()}") from None
    refused = compression_refused(name, magic)
    if refused:
        raise UserError(f"replay: {refused}")
    return Input(name, regular=True, gzip=magic.startswith(GZIP_MAGIC))


def compression_refused(name: str, magic: bytes) -> str | None:
    for prefix, (kind, tool) in REFUSED_COMPRESSION.items():
        if magic.startswith(prefix):
            shown = "FILE" if name == "-" else name
            return (
                f"{name}: {kind}-compressed; replay reads plain and gzip logs: decompress into "
                f"it, `{tool} {shown} | convert.py replay -`"
            )
    return None


def sniff(head: bytes) -> str:
    """How the input holds its events: one JSON value per line, one array, or JSON values
    spread over lines (pretty-printed). A first line that is JSON means lines, unless it is
    an array and all there is; one that is not JSON, nor the start of a value, means lines.
    An array is of events: `[` then `{` or `]`. A log copied from the middle of a line (`tail
    -c`, a rotation) can start with `[` too, inside an event: see `_cut_into`."""
    text = head.removeprefix(BOM).lstrip(WHITESPACE)
    first, _, rest = text.partition(b"\n")
    try:
        value = json.loads(first)
    except ValueError:
        pass
    else:
        alone = isinstance(value, list) and not rest.strip(WHITESPACE)
        return ARRAY if alone else NEWLINE_DELIMITED
    if text.startswith(b"["):
        of_events = text[1:].lstrip(WHITESPACE)[:1] in (b"{", b"]", b"")
        return ARRAY if of_events and not _cut_into(first, rest) else NEWLINE_DELIMITED
    try:
        decoded = text.decode("utf-8")
        _, end = json.JSONDecoder().raw_decode(decoded)
    except ValueError:
        return NEWLINE_DELIMITED
    return UNSTRUCTURED if "\n" in decoded[:end] else NEWLINE_DELIMITED


def _cut_into(first: bytes, rest: bytes) -> bool:
    """Whether a first line that is not JSON is the end of an event whose start was cut off
    (it ends as an event does, with `}`) and the next line that is not blank is an event
    object of its own. An array's first line never ends so: it is `[`, or it ends inside its
    first element or with the comma after it."""
    if not first.rstrip(WHITESPACE).endswith(b"}"):
        return False
    pos = 0
    while (end := rest.find(b"\n", pos)) >= 0:  # whole lines of the head only
        following = rest[pos:end]
        pos = end + 1
        if following.strip(WHITESPACE):
            try:
                return isinstance(json.loads(following), dict)
            except ValueError:
                return False
    return False


# ---------------------------------------------------------------------------------------------
# Lines: record numbers to line numbers, and what is wrong with a line


class LineCursor:
    """Walks an input's lines in order, counting the records DuckDB reads in them (the lines
    that are not blank), so that record N maps to its line number; `last` is the bytes of the
    line it stopped on. Reads blocks into one buffer. A line longer than MAX_OBJECT is passed
    through, never held: its bytes are then a placeholder holding its length."""

    def __init__(
        self, readinto: Callable[[memoryview], int], placeholder: bytes, line: int = 0
    ) -> None:
        self._readinto = readinto
        self._placeholder = placeholder
        self.buffer = bytearray(CURSOR_BLOCK)
        self.end = 0  # bytes of buffer that hold input
        self._eof = False
        self.pos = 0  # where the next line starts in buffer
        self.first = line  # lines before this input
        self.rec = 0  # records passed
        self.blanks = 0  # blank lines passed
        self.blank_recs: list[int] | None = None  # if a list, the records passed at each blank
        self.stopped = False  # set from another thread: read no further
        self._span = (0, 0)  # where the last record's line is in buffer

    @property
    def line(self) -> int:
        """Lines passed (the last one's number)."""
        return self.first + self.rec + self.blanks

    @property
    def last(self) -> bytes:
        """The bytes of the record the cursor stopped on (until it moves again)."""
        return bytes(self.buffer[self._span[0] : self._span[1]])

    def advance(self, rec: int) -> int:
        """Pass lines up to record `rec` (no further than the input goes); its line number."""
        buffer, pos, stop, count = self.buffer, self.pos, self.end, self.rec
        find = buffer.find
        start = end = pos
        while count < rec:
            end = find(b"\n", pos, stop)
            if end < 0:
                self.pos = pos
                more = self._refill()
                buffer, pos, stop = self.buffer, self.pos, self.end
                find = buffer.find
                if more:
                    continue
                if pos >= stop:
                    break
                end = stop  # the last line, without a newline
            start = pos
            pos = end + 1
            if buffer[start] == 123:  # "{": the usual line
                count += 1
                continue
            if self.first == 0 and count + self.blanks == 0 and buffer.startswith(BOM, start):
                start += 3  # DuckDB skips a byte-order mark before the first line
            if buffer[start:end].strip(WHITESPACE):
                count += 1
            else:
                self.blanks += 1  # DuckDB skips a blank line: not a record
                if self.blank_recs is not None:
                    self.blank_recs.append(count)
        self.pos, self.rec, self._span = min(pos, stop), count, (start, end)
        return self.line

    def _refill(self) -> bool:
        """More input after the partial line at pos; False at the end of the input. A partial
        line longer than MAX_OBJECT is read through and becomes a placeholder line."""
        if self._eof or self.stopped:
            return False
        buffer = self.buffer
        rest = self.end - self.pos
        buffer[:rest] = buffer[self.pos : self.end]
        self.pos, self.end = 0, rest
        if rest > MAX_OBJECT:
            self._pass_long_line()
            return True
        if rest == len(buffer):  # a line longer than the buffer: make room for it
            buffer.extend(bytes(min(len(buffer), MAX_OBJECT + CURSOR_BLOCK - len(buffer))))
        count = self._readinto(memoryview(buffer)[rest:])
        if not count:
            self._eof = True
            return False
        self.end = rest + count
        return True

    def _pass_long_line(self) -> None:
        buffer = self.buffer
        size = self.end
        view = memoryview(buffer)
        while count := self._readinto(view):
            newline = buffer.find(b"\n", 0, count)
            if newline >= 0:
                stand_in = self._placeholder + b'%d"' % (size + newline)
                tail = bytes(buffer[newline:count])
                del view
                buffer[: len(stand_in) + len(tail)] = stand_in + tail
                self.end = len(stand_in) + len(tail)
                return
            size += count
        del view
        stand_in = self._placeholder + b'%d"' % size
        buffer[: len(stand_in)] = stand_in
        self.end = len(stand_in)
        self._eof = True


class LineScan(threading.Thread):
    """Walks an input's lines on a thread of its own while DuckDB reads the input (whose
    query leaves Python's lock free), noting the blank lines DuckDB skips, by how many records
    come before each; then record `rec` is on line `line(rec)`. Nothing is held but those
    numbers. A line's bytes, for a bad line's report, come from a cursor of their own."""

    def __init__(self, cursor: LineCursor) -> None:
        super().__init__(name="replay-lines", daemon=True)
        self.cursor = cursor
        self.blanks: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        self.cursor.blank_recs = self.blanks
        try:
            self.cursor.advance(sys.maxsize)
        except BaseException as error:  # raised in the reading thread, by `finish`
            self.error = error

    def finish(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error

    def scan_here(self) -> LineScan:
        """The scan done on the calling thread instead."""
        self.run()
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        self.cursor.stopped = True
        self.join()

    def line(self, rec: int) -> int:
        return self.cursor.first + rec + bisect.bisect_left(self.blanks, rec)

    @property
    def passed(self) -> int:
        """Lines scanned (the last one's number), once finished."""
        return self.cursor.line


class ForkedScan:
    """The first input's LineScan done by the prescan's child process (Prescan): the same
    numbers, read from the child once DuckDB has read the file. If the child could not give
    them, the scan is done here instead, as a LineScan would."""

    def __init__(self, prescan: Prescan, cursor: Callable[[], LineCursor]) -> None:
        self.prescan = prescan
        self.cursor = cursor
        self.blanks: Sequence[int] = []
        self.passed = 0
        self.finished = False

    def start(self) -> None:
        pass  # the child started before the rules were converted

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        found = self.prescan.result()
        if found is None:  # the child died or failed: scan here
            scan = LineScan(self.cursor()).scan_here()
            self.blanks, self.passed = scan.blanks, scan.passed
        else:
            self.blanks, self.passed = found
            self.prescan.used = True

    def stop(self) -> None:
        pass

    def line(self, rec: int) -> int:
        return rec + bisect.bisect_left(self.blanks, rec)


def _identity(info: os.stat_result) -> tuple[int, ...]:
    """What says a file is still the one scanned: device, inode, size, the times it was
    written and its inode changed (which `touch` cannot set back)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class Prescan:
    """The line scan of replay's first input, if it is a large plain file (PRESCAN_SIZE and
    up), done by a child process forked before replay loads and converts its rules: about
    0.3 s in which a core is otherwise idle, while the scan of a 1.7 GB file takes 0.35 s of
    CPU that, run beside DuckDB, slows its read of the file by as much. (A thread could not
    run then: the scan and the start-up are both Python, and would take turns.) The child
    reads the file as it was open at the start and writes its numbers to a pipe; the parent
    reads them, and reaps the child, when DuckDB has read the file. A file that changed
    since, or whose name no longer names it, is scanned by a thread beside DuckDB instead, as
    are later inputs (no start-up precedes them), smaller files, streams, and every file
    without os.fork (Windows); so is the file if the child fails (ForkedScan)."""

    def __init__(self, names: Sequence[str], size: int | None = None) -> None:
        size = PRESCAN_SIZE if size is None else size
        self.fd: int | None = None  # the first input's, open from the start
        self.identity: tuple[int, ...] = ()
        self.pid = 0
        self.pipe: int | None = None
        self.used = False  # whether the scan came from the child
        name = names[0] if names else "-"
        with contextlib.suppress(OSError):  # said by check_input, once replay starts
            info = None if name == "-" else os.stat(name)
            if info is None or not stat.S_ISREG(info.st_mode) or info.st_size < size:
                return
            fd = os.open(name, os.O_RDONLY)
            try:
                if os.pread(fd, len(GZIP_MAGIC), 0) != GZIP_MAGIC:  # gzip: read as a stream
                    self.identity, self.fd = _identity(os.fstat(fd)), fd
            finally:
                if self.fd is None:
                    os.close(fd)

    def __enter__(self) -> Prescan:
        if self.fd is not None and hasattr(os, "fork"):
            read, write = os.pipe()
            self.pid = os.fork()
            if self.pid == 0:  # the child: scans, writes, and leaves without cleaning up
                code = 1
                with contextlib.suppress(BaseException):
                    for fd in (read, 0, 1, 2):  # a reader of replay's output waits for no
                        if fd != self.fd:  # child
                            with contextlib.suppress(OSError):
                                os.close(fd)
                    self._scan(write)
                    code = 0
                os._exit(code)
            os.close(write)
            self.pipe = read
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(kill=True)

    def close(self, kill: bool = False) -> None:
        """The child reaped (killed first, if asked), the pipe and the file closed."""
        if self.pid:
            if kill:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(self.pid, 0)
            self.pid = 0
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _scan(self, out: int) -> None:
        assert self.fd is not None
        scan = LineScan(LineCursor(FdReader(self.fd, offset=0).readinto, b"")).scan_here()
        numbers = array.array("q", [scan.passed, len(scan.blanks)])
        numbers.extend(scan.blanks)
        data = memoryview(numbers.tobytes())
        while data:
            data = data[os.write(out, data) :]

    def scan(self, fd: int, cursor: Callable[[], LineCursor]) -> ForkedScan | None:
        """The prescan's scan of the file open as fd, if it is the file scanned (the first
        input, or the same file again) and the numbers are not taken yet."""
        if self.pipe is None:
            return None
        if _identity(os.fstat(fd)) != self.identity:
            self.close(kill=True)
            return None
        return ForkedScan(self, cursor)

    def result(self) -> tuple[Sequence[int], int] | None:
        """The file's blank lines (by the records before each) and lines, from the child,
        which is then reaped; None if it failed."""
        head = self._read(2 * 8)
        found = None
        if head is not None:
            passed, count = array.array("q", head)
            blanks = self._read(count * 8)
            if blanks is not None:
                found = array.array("q", blanks), passed
        self.close(kill=found is None)
        return found

    def _read(self, size: int) -> bytearray | None:
        """Exactly size bytes from the child (None if it stopped before)."""
        assert self.pipe is not None
        data = bytearray()
        while len(data) < size:
            more = os.read(self.pipe, size - len(data))
            if not more:
                return None
            data += more
        return data


class Lines:
    """Line numbers from a finished scan; a bad record's bytes from a cursor made on the first
    one asked for, which walks on from record to record (one more read at most)."""

    def __init__(self, scan: LineScan | ForkedScan, cursor: Callable[[], LineCursor]) -> None:
        self.scan = scan
        self._make = cursor
        self._cursor: LineCursor | None = None

    def at(self, rec: int) -> LineCursor | None:
        """A cursor standing on record rec (None if the input ends before it)."""
        if self._cursor is None or self._cursor.rec > rec:
            self._cursor = self._make()
        self._cursor.advance(rec)
        return self._cursor if self._cursor.rec == rec else None


def what_is_wrong(line: bytes, placeholder: bytes) -> str:
    """A bad line's problem, in a reader's words."""
    limit = f"DuckDB's {MAX_OBJECT // 2**20} MiB limit for one JSON object"
    if line.startswith(placeholder):
        size = int(line[len(placeholder) :].rstrip(b'"'))
        return f"{size:,} bytes, over {limit}"
    if len(line) > MAX_OBJECT:
        return f"{len(line):,} bytes, over {limit}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not valid UTF-8 (byte 0x{line[error.start]:02x} at column {error.start + 1})"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return f"malformed JSON ({error.msg} at column {error.colno})"
    if not isinstance(value, dict):
        kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
        return f"{kinds.get(type(value), 'a number')}, not a JSON object"
    if value.get("kind") == "EventList":
        return "an EventList whose items are not a list of events"
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "a \\u escape that is not a character (an unpaired surrogate)"
    return "a JSON object without any audit Event field the rules read (not an audit Event)"


def document_error(fd: int, fmt: str) -> tuple[str, bytes]:
    """Where a JSON array or pretty-printed file stops being JSON, as `line L, column C:
    what`, and the document's whole values before that point, as a document of their own (an
    array's elements closed with `]`; empty if there are none). Files up to 256 MiB are
    searched."""
    size = os.fstat(fd).st_size
    if size > 256 * 2**20:
        return "not valid JSON (where, in a file this large, is not located)", b""
    parts: list[bytes] = []
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        parts.append(chunk)
        offset += len(chunk)
    data = b"".join(parts)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        where = f"line {line}, column {column}: not valid UTF-8 (byte 0x{data[error.start]:02x})"
        text = data[: error.start].decode("utf-8-sig")
        end, _ = _walk_document(text, fmt)
        return where, _whole_values(text, fmt, end)
    end, fault = _walk_document(text, fmt)
    if fault is None:
        return "not readable as JSON", b""
    where = f"line {fault.lineno}, column {fault.colno}: malformed JSON ({fault.msg})"
    return where, _whole_values(text, fmt, end)


def _walk_document(text: str, fmt: str) -> tuple[int, json.JSONDecodeError | None]:
    """How far `text` holds whole values (the index after the last one: an array's elements,
    or values one after another), and the fault that stops them (None: the whole text)."""
    decoder, pos, last = json.JSONDecoder(), 0, 0

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    def expect(what: str, pos: int) -> int:
        if text[pos : pos + 1] != what:
            raise json.JSONDecodeError(f"Expecting '{what}'", text, pos)
        return skip(pos + 1)

    try:
        if fmt != ARRAY:
            while (pos := skip(pos)) < len(text):
                _, pos = decoder.raw_decode(text, pos)
                last = pos
            return last, None
        pos = expect("[", skip(0))
        while text[pos : pos + 1] != "]":
            if last:
                pos = expect(",", pos)
            _, pos = decoder.raw_decode(text, pos)
            last, pos = pos, skip(pos)
        if (pos := skip(pos + 1)) < len(text):
            raise json.JSONDecodeError("Extra data", text, pos)
        return len(text), None
    except json.JSONDecodeError as fault:
        return last, fault


def _whole_values(text: str, fmt: str, end: int) -> bytes:
    """The whole values of a document that end at `end`, as a document (b"" if none)."""
    if not end:
        return b""
    return (text[:end] + ("]" if fmt == ARRAY else "")).encode()


# ---------------------------------------------------------------------------------------------
# Streams


class FdReader:
    """Reads a file descriptor: what a stream has (os.read), or a file from an offset on
    (os.pread, leaving the descriptor's own position alone); bytes put back come first."""

    def __init__(self, fd: int, offset: int | None = None) -> None:
        self.fd = fd
        self.offset = offset
        self.pushed = b""
        self.done = 0  # bytes read

    def __call__(self, size: int) -> bytes:
        if self.pushed:
            data, self.pushed = self.pushed[:size], self.pushed[size:]
            return data
        if self.offset is None:
            data = os.read(self.fd, size)
        else:
            data = os.pread(self.fd, size, self.offset)
            self.offset += len(data)
        self.done += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        if self.pushed:
            data = self(len(view))
            view[: len(data)] = data
            return len(data)
        if self.offset is None:
            count = os.readv(self.fd, [view])
        else:
            count = os.preadv(self.fd, [view], self.offset)
            self.offset += count
        self.done += count
        return count

    def unread(self, data: bytes) -> None:
        self.pushed = data + self.pushed

    def ready(self, timeout: float) -> bool:
        """Whether reading would not wait (waiting at most timeout seconds to know)."""
        if self.pushed or self.offset is not None:
            return True
        with contextlib.suppress(OSError, ValueError):
            return bool(select.select([self.fd], [], [], timeout)[0])
        return True


def _always(timeout: float) -> bool:
    return True


class _RawFd(io.RawIOBase):
    """An FdReader as a file object, for gzip."""

    def __init__(self, reader: FdReader) -> None:
        self.reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.reader(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def line_blocks(
    readinto: Callable[[memoryview], int],
    ready: Callable[[float], bool],
    head: bytes,
    placeholder: bytes,
) -> Iterator[tuple[bytes | bytearray, int]]:
    """Blocks of whole lines of about CHUNK bytes, each as (buffer, length): the block is the
    buffer's first `length` bytes, good until the next block is asked for. The input is read
    straight into one buffer, allocated once (a buffer grown and cut for every block had its
    memory faulted in anew each time: 1 s of a 1.7 GB stream). A slow stream's complete lines
    wait at most STREAM_WAIT. A line longer than MAX_OBJECT is replaced by a placeholder line
    holding its length, never held whole. If the input breaks off (a read error, gzip data
    corrupt or cut short), the complete lines read before it come as a last block, then the
    error is raised."""
    buffer = bytearray(max(CHUNK, len(head)) + MAX_OBJECT + 2 * READ + len(placeholder) + 64)
    view = memoryview(buffer)
    end = len(head)  # bytes of input in buffer
    view[:end] = head
    line_start = buffer.rfind(b"\n", 0, end) + 1  # where the partial last line starts
    oversized: int | None = None  # length so far of a long line being passed through
    eof = False
    broken: Exception | None = None  # what ended the input early
    try:
        while not eof:
            started = time.monotonic()
            while end < CHUNK or not line_start:
                waited = time.monotonic() - started
                if line_start and (waited >= STREAM_WAIT or not ready(STREAM_WAIT - waited)):
                    break
                try:
                    count = readinto(view[end : end + READ])
                except (OSError, EOFError, zlib.error) as error:  # gzip's BadGzipFile: OSError
                    broken, eof = error, True
                    break
                if not count:
                    eof = True
                    break
                if oversized is not None:  # the long line's bytes are read over, not kept
                    newline = buffer.find(b"\n", end, end + count)
                    if newline < 0:
                        oversized += count
                        continue
                    rest = placeholder + b'%d"\n' % (oversized + newline - end)
                    rest += view[newline + 1 : end + count]  # a copy: it moves back
                    view[end : end + len(rest)] = rest
                    oversized, count = None, len(rest)
                newline = buffer.rfind(b"\n", end, end + count)
                if newline >= 0:
                    line_start = newline + 1
                end += count
                if end - line_start > MAX_OBJECT:  # a partial line already too long
                    oversized, end = end - line_start, line_start
            if eof and oversized is not None and broken is None:
                stand_in = placeholder + b'%d"' % oversized
                view[end : end + len(stand_in)] = stand_in
                end += len(stand_in)
            cut = end if eof and broken is None else line_start  # a line broken off: not read
            if cut:
                replaced = _replace_long_lines(buffer, cut, placeholder)
                yield (buffer, cut) if replaced is None else (replaced, len(replaced))
                view[: end - cut] = view[cut:end]  # the partial last line, to the front
                end, line_start = end - cut, 0
        if broken is not None:
            raise broken
    finally:
        view.release()


def _replace_long_lines(buffer: bytearray, end: int, placeholder: bytes) -> bytes | None:
    """The first `end` bytes of buffer with each line longer than MAX_OBJECT as a placeholder
    line, or None if it has none (a window of half the limit without a newline is where one
    can be)."""
    step = MAX_OBJECT // 2
    if all(buffer.find(b"\n", p, p + step) >= 0 for p in range(0, end - step, step)):
        return None
    parts, pos = [], 0
    while pos < end:
        stop = buffer.find(b"\n", pos, end)
        stop = end if stop < 0 else stop
        if stop - pos > MAX_OBJECT:
            parts.append(placeholder + b'%d"' % (stop - pos) + buffer[stop : min(stop + 1, end)])
        else:
            parts.append(bytes(buffer[pos : min(stop + 1, end)]))
        pos = stop + 1
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# The run


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""


class SwitchToBatches(Exception):
    """A record is an EventList: read on from it item by item."""

    def __init__(self, rec: int) -> None:
        self.rec = rec


class Oversized(Exception):
    """DuckDB stopped on a line over its object size limit."""


@dataclass
class Tally:
    """What one input held."""

    records: int = 0  # JSON values DuckDB read (lines that are not blank)
    batches: int = 0  # of which EventLists
    batch_events: int = 0  # their items
    bad_records: int = 0
    bad_items: int = 0

    @property
    def events(self) -> int:
        return self.records - self.batches - self.bad_records + self.batch_events - self.bad_items


@dataclass
class State:
    """One input being read."""

    name: str
    quoted: str
    fmt: str = NEWLINE_DELIMITED
    batches: bool = False
    tally: Tally = field(default_factory=Tally)
    reported: int = 0  # bad lines or items reported one by one
    partial: bool = False  # not read to the end
    written: tuple[int, int] = (-1, -1)  # (line or record, item) of the last row handled
    replaying: tuple[int, int] | None = None  # rows up to here were handled before a restart


class Replayer:
    """Runs the plan over each input: writes alerts, reports bad input, sums up."""

    def __init__(
        self,
        rules: list[Rule],
        connection: Any,
        out: TextIO,
        err: TextIO,
        fmt: str,
        correlations: Sequence[ReplayRule] = (),
        bases: Sequence[Rule] = (),
        prescan: Prescan | None = None,
    ):
        self.prescan = prescan
        self.rules = rules
        self.correlations = list(correlations)
        self.correlation_alerts = [0] * len(self.correlations)
        self.token = f"replay:end:{uuid.uuid4().hex}"
        keep = dict.fromkeys(f for rule in self.correlations for f in rule.fields)
        self.plan = Plan(rules, self.token, fmt == "table", bases if correlations else (), keep)
        # the base rules' events: None before the first query, then the SELECT of those in
        # ROWS not yet copied into KEPT ("" if none)
        self.kept: str | None = None
        self.untimed = 0  # of the events kept, those without a valid time
        self.connection = connection
        self.out = out
        self.err = err
        self.format = fmt
        self.out_terminal = _is_terminal(out)
        self.alerts = [0] * len(rules)
        self.states: list[State] = []
        self.headers = [
            json.dumps({"rule_id": r.id, "rule": r.title, "level": r.level}, ensure_ascii=False)
            for r in rules
        ]
        self.placeholder = f'"replay:oversized:{uuid.uuid4().hex}:'.encode()
        self.sentinels: dict[str, str] = {}
        self.table_started = False
        self.lock = threading.Lock()
        self.progress_shown = False
        self.progress: tuple[str, Callable[[], str]] | None = None

    # -- writing

    def warn(self, message: str) -> None:
        with self.lock:
            self.clear_progress()
            self.err.write(f"replay: {message}\n")
            self.err.flush()

    def clear_progress(self) -> None:
        if self.progress_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self.progress_shown = False

    def show_progress(self) -> None:
        """The progress line, drawn again in place (stderr a terminal only)."""
        if self.progress is None:
            return
        name, describe = self.progress
        with contextlib.suppress(Exception), self.lock:
            text = f"replay: {name}: {describe()}, {_plural(sum(self.alerts), 'alert')} so far"
            self.err.write("\r\x1b[K" + text)
            self.err.flush()
            self.progress_shown = True

    def emit(self, state: State, location: str, row: tuple[Any, ...]) -> None:
        for n, alert in row_alerts(row[5]):
            self.alerts[n] += 1
            if self.out_terminal and self.progress_shown:
                with self.lock:
                    self.clear_progress()
            if self.format == "json":
                where = f'"file": {state.quoted}, {location}'
                self.out.write(f"{self.headers[n][:-1]}, {where}, {alert[1:]}\n")
            else:
                self.table_row(self.rules[n], state, location, row[6:])

    def table_row(self, rule: Rule, state: State, location: str, shown: tuple[Any, ...]) -> None:
        value = dict(zip(TABLE_FIELDS, shown, strict=True))
        where = json.loads("{" + location + "}")
        place = f"{state.name}:{where['line']}" if "line" in where else state.name
        if "record" in where:
            place += f" record {where['record']}"
        if "item" in where:
            place += f" item {where['item']}"
        resource = (value["objectRef.resource"], value["objectRef.subresource"])
        target = (value["objectRef.namespace"], value["objectRef.name"])
        cells = [
            (value["requestReceivedTimestamp"], 27),
            (rule.title, 36),
            (value["user.username"], 32),
            (" ".join(str(v) for v in (value["verb"], "/".join(filter(None, resource))) if v), 30),
            ("/".join(filter(None, target)), 32),
            (place, 0),
        ]
        if not self.table_started:
            self.table_started = True
            titles = ("TIME", "RULE", "USER", "ACTION", "OBJECT", "WHERE")
            self.out.write(_cells([(t, w) for t, (_, w) in zip(titles, cells, strict=True)]))
        self.out.write(_cells(cells))

    def summary(self, stopped: str | None = None) -> None:
        for rule, count in zip(self.rules, self.alerts, strict=True):
            self.warn(f"{count:>9,}  {rule.title} ({rule.id})")
        for correlation, count in zip(self.correlations, self.correlation_alerts, strict=True):
            self.warn(f"{count:>9,}  {correlation.title} ({correlation.id}, correlation)")
        tallies = [s.tally for s in self.states]
        bad_lines = sum(t.bad_records for t in tallies)
        bad_items = sum(t.bad_items for t in tallies)
        partial = sum(s.partial for s in self.states)
        parts = [
            _plural(len(self.states), "file"),
            f"{_plural(sum(t.events for t in tallies), 'event')} read",
            f"{_plural(bad_lines, 'line')} skipped",
            *([f"{_plural(bad_items, 'batch item')} skipped"] if bad_items else []),
            *([f"{_plural(partial, 'file')} not read to the end"] if partial else []),
            *([f"{_plural(self.untimed, 'event')} without a time"] if self.untimed else []),
            _plural(len(self.rules) + len(self.correlations), "rule"),
            _plural(sum(self.alerts) + sum(self.correlation_alerts), "alert"),
        ]
        self.warn((f"stopped by {stopped}: " if stopped else "") + ", ".join(parts))

    def exit_code(self) -> int:
        skipped = any(s.partial or s.tally.bad_records or s.tally.bad_items for s in self.states)
        return EXIT_SKIPPED if skipped or self.untimed else EXIT_OK

    # -- reading

    def run(self, inputs: list[Input]) -> None:
        end = f'{{"kind": "{self.token}"}}'
        fds = {fmt: _memory_file(text.encode()) for fmt, text in ((ARRAY, f"[{end}]\n"), ("", end))}
        self.sentinels = {fmt: _fd_path(fd) for fmt, fd in fds.items()}
        try:
            for inp in inputs:
                state = State(inp.name, json.dumps(inp.name, ensure_ascii=False))
                self.states.append(state)
                self.replay(inp, state)
                more = state.tally.bad_records + state.tally.bad_items - state.reported
                if more > 0:
                    unit = "lines" if state.fmt == NEWLINE_DELIMITED else "records"
                    self.warn(f"{inp.name}: {more:,} more bad {unit} skipped")
            self.correlate()
        finally:
            for fd in fds.values():
                os.close(fd)

    def sources(self, path: str, fmt: str) -> list[str]:
        """The input and, after it, one record marking its end (its number, less one, is how
        many records DuckDB read)."""
        return [path, self.sentinels.get(fmt, self.sentinels[""])]

    def replay(self, inp: Input, state: State) -> None:
        import duckdb

        stdin = inp.name == "-"
        fd = sys.stdin.fileno() if stdin else os.open(inp.name, os.O_RDONLY)
        try:
            if not inp.regular or inp.gzip:
                self.stream(state, FdReader(fd))
                return
            try:
                self.file(state, fd)
            except Oversized:  # read it again as a stream; nothing is written twice
                state.replaying, state.tally = state.written, Tally()
                self.stream(state, FdReader(fd, offset=0))
        except duckdb.OutOfMemoryException:
            state.partial = True
            self.warn(
                f"{inp.name}: DuckDB ran out of memory; the rest of it was not read (replay it "
                "in parts, e.g. `split -l 1000000`, or on a machine with more memory)"
            )
        except duckdb.Error as error:  # not expected with ignore_errors: said in our words
            state.partial = True
            what = "a read error" if isinstance(error, duckdb.IOException) else "unreadable JSON"
            self.warn(f"{inp.name}: stopped at {what}; the rest of it was not read")
        finally:
            if not stdin:
                os.close(fd)

    def file(self, state: State, fd: int) -> None:
        """DuckDB reads a regular file itself."""
        head = os.pread(fd, 1 << 20, 0)
        state.fmt = sniff(head)
        if state.fmt == NEWLINE_DELIMITED and len(head) == 1 << 20:
            state.fmt = sniff(os.pread(fd, MAX_OBJECT, 0))  # a long pretty-printed first event
        size = os.fstat(fd).st_size
        self.progress = (state.name, lambda: self._query_progress(size))
        if state.fmt != NEWLINE_DELIMITED:
            self.document(state, fd)
            return

        def cursor() -> LineCursor:
            return LineCursor(FdReader(fd, offset=0).readinto, self.placeholder)

        scan = self.prescan.scan(fd, cursor) if self.prescan else None
        self.lines(state, _fd_path(fd), cursor, scan)

    def stream(self, state: State, reader: FdReader) -> None:
        """Blocks of whole lines, each through an in-memory file; a JSON document is spooled
        to a temporary file and read whole."""
        read: Callable[[int], bytes] = reader
        readinto: Callable[[memoryview], int] = reader.readinto
        ready = reader.ready
        _widen_pipe(reader.fd)
        head = _read_at_least(reader, 8)
        if head.startswith(GZIP_MAGIC):
            reader.unread(head)
            gz = gzip.GzipFile(fileobj=io.BufferedReader(_RawFd(reader), 1 << 20), mode="rb")
            read, readinto, ready, head = gz.read1, gz.readinto1, _always, b""
        elif refused := compression_refused(state.name, head):
            self.warn(f"{refused} (skipped)")
            state.partial = True
            return
        self.progress = (state.name, lambda: f"{reader.done / 2**20:,.0f} MiB read")
        try:
            while b"\n" not in head.lstrip(WHITESPACE) and len(head) < MAX_OBJECT:
                if not (data := read(CHUNK)):
                    break
                head += data
            state.fmt = sniff(head[:MAX_OBJECT])
            if state.fmt != NEWLINE_DELIMITED:
                with tempfile.TemporaryFile(prefix="replay-") as spool:
                    spool.write(head)
                    while data := read(CHUNK):
                        spool.write(data)
                    spool.flush()
                    self.document(state, spool.fileno())
                return
            line = 0
            # a pipe's read can wait for ever; a file's ends soon after the run stops
            wait = None if stat.S_ISREG(os.fstat(reader.fd).st_mode) else STREAM_WAIT
            blocks = functools.partial(
                line_blocks, ready=ready, head=head, placeholder=self.placeholder
            )
            for fd in _written_ahead(blocks, readinto, wait):

                def cursor(fd: int = fd, first: int = line) -> LineCursor:
                    return LineCursor(FdReader(fd, offset=0).readinto, self.placeholder, first)

                line = self.lines(state, _fd_path(fd), cursor)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            state.partial = True
            self.warn(f"{state.name}: gzip data corrupt or cut short; the rest was not read")
        except Oversized:
            state.partial = True
            self.warn(f"{state.name}: a line DuckDB cannot hold; the rest was not read")
        except OSError as error:
            state.partial = True
            what = (error.strerror or str(error)).lower()
            self.warn(f"{state.name}: {what}; the rest was not read")

    def lines(
        self,
        state: State,
        source: str,
        cursor: Callable[[], LineCursor],
        scan: LineScan | ForkedScan | None = None,
    ) -> int:
        """One query over lines (a file, or one block of a stream), each record's number made
        its line number by a scan of the lines (`cursor` makes a cursor at the start of the
        lines): the prescan's, if given, or one that runs while DuckDB reads them; the number
        of the last line scanned. From a record that is an EventList on, it reads item by
        item. Raises Oversized if DuckDB stops on a line over its limit."""
        import duckdb

        after = 0
        scan = scan or LineScan(cursor())
        scan.start()
        lines = Lines(scan, cursor)
        try:
            while True:
                sources = self.sources(source, NEWLINE_DELIMITED)
                try:
                    sql = self.plan.sql(sources, NEWLINE_DELIMITED, state.batches, after)
                    result = self.query(sql, by_rowid=not state.batches)
                    scan.finish()
                    while batch := result.fetchmany(BATCH):
                        if self.line_rows(state, batch, lines):
                            break
                    self.keep(not state.batches)
                    return scan.passed
                except SwitchToBatches as switch:
                    self.keep(not state.batches, before=switch.rec)
                    state.batches, after = True, switch.rec - 1
                except duckdb.InvalidInputException as error:
                    if "maximum_object_size" in str(error):
                        raise Oversized() from error
                    raise
        finally:
            scan.stop()

    def line_rows(self, state: State, rows: list[tuple[Any, ...]], lines: Lines) -> bool:
        """A batch of rows over lines; True once the end sentinel came. The usual row, a
        record with alerts written as JSON, takes the short way."""
        written: list[str] = []
        line_of, alerts = lines.scan.line, self.alerts
        fast = self.format == "json" and state.replaying is None
        prefixes = [f'{h[:-1]}, "file": {state.quoted}, "line": ' for h in self.headers]
        try:
            for row in rows:
                rec, item, kind = row[0], row[1], row[3]
                if kind is not None and kind != "Event":
                    if kind == self.token:
                        state.tally.records += rec - 1
                        return True
                    if kind == "EventList" and not state.batches:
                        raise SwitchToBatches(rec)
                line = line_of(rec)
                if fast and item is None and not row[4]:
                    for entry in row[5]:  # row_alerts(row[5]), inline
                        brace = entry.index("{")
                        n = int(entry[:brace])
                        alerts[n] += 1
                        written.append(f"{prefixes[n]}{line}, {entry[brace + 1 :]}\n")
                    state.written = (line, -1)
                    continue
                self.out.write("".join(written))
                written.clear()
                self.row(state, "line", line, row, lines.at(rec) if row[4] else None)
            return False
        finally:
            if written:
                if self.out_terminal and self.progress_shown:
                    with self.lock:
                        self.clear_progress()
                self.out.write("".join(written))

    def document(self, state: State, fd: int) -> None:
        """A JSON array or pretty-printed events: DuckDB reads the whole document; its values
        are records numbered from 0, an EventList's items read one by one. A document that
        stops being JSON is read up to there: its whole values before that point."""
        import duckdb

        try:
            self.document_rows(state, fd)
        except duckdb.InvalidInputException:  # not JSON from some point on: read up to there
            state.partial = True
            where, before = document_error(fd, state.fmt)
            if before:
                whole = _memory_file(before)
                try:
                    self.document_rows(state, whole)
                except duckdb.InvalidInputException:  # DuckDB's reader refused them too
                    pass
                finally:
                    os.close(whole)
            self.warn(f"{state.name}: {where}; the rest of the file was not read")

    def document_rows(self, state: State, fd: int) -> None:
        """The rows of one JSON document, read whole by DuckDB (nothing if it is not JSON)."""
        sql = self.plan.sql(self.sources(_fd_path(fd), state.fmt), state.fmt, True, 0)
        for row in self._rows(sql):
            rec, kind = row[0], row[3]
            if kind == self.token:
                state.tally.records += rec - 1
                break
            self.row(state, "record", rec - 1, row, None)
        self.keep(by_rowid=False)

    def row(
        self,
        state: State,
        unit: str,
        number: int,
        row: tuple[Any, ...],
        cursor: LineCursor | None,
    ) -> None:
        """One row: a batch counted, a bad line or item reported, or its alerts written. The
        cursor, if given, stands on the row's line."""
        item, size, bad = row[1], row[2], row[4]
        if item is not None and item <= 0:  # the first item of a batch, or an empty batch
            state.tally.batches += 1
            state.tally.batch_events += size
            if item < 0:
                return
        at = (number, -1 if item is None else item)
        again = state.replaying is not None and at <= state.replaying
        state.written = max(state.written, at)
        if bad:
            if item is None:
                state.tally.bad_records += 1
            else:
                state.tally.bad_items += 1
            if not again and state.reported < MAX_REPORTED:
                state.reported += 1
                place = f":{number}" if unit == "line" else f": record {number}"
                place += "" if item is None else f": item {item}"
                problem = (
                    what_is_wrong(cursor.last, self.placeholder)
                    if item is None and cursor is not None
                    else "not an audit Event object"
                )
                self.warn(f"{state.name}{place}: {problem} (skipped)")
        elif not again:
            location = f'"{unit}": {number}' + ("" if item is None else f', "item": {item}')
            self.emit(state, location, row)

    def query(self, sql: str, by_rowid: bool) -> Any:
        """The rows replay handles of one plan query, to fetch from: the query's result is
        kept in the table ROWS first (see Plan), which with correlation rules also holds the
        events their base rules match, for `keep`. One read of the input gives both."""
        if self.kept:  # before ROWS is replaced
            self.connection.execute(f"INSERT INTO {KEPT} {self.kept}")
            self.kept = ""
        self.connection.execute(f"CREATE OR REPLACE TEMP TABLE {ROWS} AS {sql}")
        if self.correlations and self.kept is None:
            self.connection.execute(
                f"CREATE TEMP TABLE {KEPT} AS {self.plan.kept(by_rowid)} LIMIT 0"
            )
            self.kept = ""
        return self.connection.execute(self.plan.rows(by_rowid))

    def keep(self, by_rowid: bool, before: int | None = None) -> None:
        """The events of the last query that the correlations' base rules match (of records
        before `before`; by_rowid: how that query numbered them) are kept for the
        correlations: copied into the table KEPT when the next query replaces ROWS, or, the
        last query's, read where they are."""
        if self.correlations:
            self.kept = self.plan.kept(by_rowid, before)

    def correlate(self) -> None:
        """Each correlation rule over the events of every input that its base rules match: one
        alert per correlated group (its key, when it started and ended, its events)."""
        from k8s_audit_detect.correlate import DUCKDB_EVENT_TIME, correlate_table

        if self.kept is None:
            return
        last = f" UNION ALL {self.kept}" if self.kept else ""
        self.connection.execute(f"CREATE TEMP VIEW {VIEW} AS SELECT * FROM {KEPT}{last}")
        (self.untimed,) = self.connection.execute(
            f"SELECT count(*) FROM {VIEW} WHERE {DUCKDB_EVENT_TIME} IS NULL"
        ).fetchone()
        if self.untimed:
            self.warn(
                f"{_plural(self.untimed, 'event')} that the correlations' base rules match "
                "without a valid requestReceivedTimestamp: the correlations leave them out"
            )
        ids = {rule.id: n for n, rule in enumerate(self.correlations)}
        for rule_id, alert in correlate_table(self.connection, self.correlations):
            self.correlation_alerts[ids[rule_id]] += 1
            if self.format == "json":
                self.out.write(alert + "\n")
            else:
                found = json.loads(alert)
                group = " ".join(f"{k}={v}" for k, v in found["group"].items())
                events = len(found.get("events") or [])
                cells = [
                    (found["first_seen"], 27),
                    (found["rule"], 36),
                    (group, 62),
                    (f"{found['correlation']}: {found.get(found['correlation'])}", 32),
                    (f"{events} events, all inputs", 0),
                ]
                self.out.write(_cells(cells))

    def _rows(self, sql: str) -> Iterator[tuple[Any, ...]]:
        result = self.query(sql, by_rowid=False)
        while batch := result.fetchmany(BATCH):
            yield from batch

    def _query_progress(self, size: int) -> str:
        done = max(self.connection.query_progress(), 0.0)
        return f"{done:.0f}% of {size / 2**20:,.0f} MiB"


def run_replay(
    files: list[Path] | list[str],
    rules: Sequence[ReplayRule],
    out: TextIO,
    err: TextIO,
    fmt: str = "json",
    correlations: Sequence[ReplayRule] = (),
    bases: Sequence[ReplayRule] = (),
    prescan: Prescan | None = None,
) -> int:
    """`convert.py replay`: alerts on out (JSON lines, or a table), bad input and a summary on
    err; returns the exit code (EXIT_*). `rules`: the plain rules (plain_rule); `correlations`:
    the correlation rules (correlate.correlation_rule), which run after every input is read,
    over the events of all of them that their base rules (`bases`, base_rule: every
    correlation's, in the order correlation_rule was given them) match, kept as the same
    single read of each input goes. `prescan`: the inputs' line scans, if the caller
    started them (Prescan, entered) before loading the rules."""
    import duckdb

    if fmt not in FORMATS:
        raise UserError(f"replay: --format {fmt}: replay writes {' or '.join(FORMATS)}")
    names = [str(name) for name in files]
    if names.count("-") > 1:
        raise UserError("replay: - (stdin) is given twice; it can be read once")
    inputs = [check_input(name) for name in names]
    progress = _is_terminal(err)
    # DuckDB spills its tables past its memory limit into a directory of its own, removed at the
    # end (by default, .tmp in the working directory)
    spill = tempfile.TemporaryDirectory(prefix="replay-spill-")
    connection = duckdb.connect()
    try:
        connection.execute(f"SET temp_directory = {_literal(spill.name)}")
        connection.execute("SET enable_external_file_cache = false")
        # records are numbered by rowid (Plan)
        connection.execute("SET preserve_insertion_order = true")
        connection.execute(f"SET enable_progress_bar = {str(progress).lower()}")
        connection.execute("SET enable_progress_bar_print = false")  # stdout carries only alerts
        compiled = compile_rules(rules, connection)
        marked = compile_rules(bases, connection)
        replayer = Replayer(compiled, connection, out, err, fmt, correlations, marked, prescan)
        caught: list[int] = []
        try:
            with _signals(caught), _progress(replayer, progress):
                replayer.run(inputs)
                out.flush()
        except BrokenPipeError:
            _quiet(out)
            return EXIT_PIPE
        except BaseException:
            if not caught:
                raise
        if caught:
            try:
                out.flush()
            except BrokenPipeError:
                _quiet(out)
            replayer.summary(stopped=signal.Signals(caught[0]).name)
            return EXIT_SIGNAL + caught[0]
        replayer.summary()
        return replayer.exit_code()
    finally:
        connection.close()
        spill.cleanup()


@contextlib.contextmanager
def _signals(caught: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM stop the run where it is (recorded in `caught`), so that the alerts
    written so far are flushed; DuckDB interrupts its query on them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        caught.append(signum)
        raise Interrupted()

    saved = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL):
            saved[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _progress(replayer: Replayer, on: bool) -> Iterator[None]:
    """A thread that redraws the progress line once a run has taken PROGRESS_AFTER seconds."""
    if not on:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        if stop.wait(PROGRESS_AFTER):
            return
        while True:
            replayer.show_progress()
            if stop.wait(0.5):
                return

    thread = threading.Thread(target=loop, name="replay-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with replayer.lock:
            replayer.clear_progress()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _quiet(out: TextIO) -> None:
    """After the reader closed stdout: nothing more to write, and nothing to say about it."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)


def _memory_file(data: bytes) -> int:
    """A file descriptor of an in-memory file (a temporary one where there is no memfd)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("replay", os.MFD_CLOEXEC)
    else:  # pragma: no cover - not Linux
        fd, name = tempfile.mkstemp(prefix="replay-")
        os.unlink(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return fd


def _refill_memory_file(fd: int, data: bytes | bytearray, length: int) -> None:
    """The in-memory file holds data's first `length` bytes now: written over from the start,
    then cut to that length (its pages are used again, not freed and faulted in anew for each
    block). No view of data outlives the call."""
    offset = 0
    with memoryview(data) as view:
        while offset < length:
            with view[offset:length] as rest:
                offset += os.pwrite(fd, rest, offset)
    os.ftruncate(fd, length)


def _written_ahead(
    blocks: Callable[[Callable[[memoryview], int]], Iterator[tuple[bytes | bytearray, int]]],
    readinto: Callable[[memoryview], int],
    wait: float | None,
) -> Iterator[int]:
    """The blocks of an input (`blocks(readinto)`: line_blocks reading with readinto) each in an
    in-memory file (one of two, their memory used again), as a file descriptor good until the
    next is asked for. A thread of its own reads and writes the next block while the one
    before is evaluated (reading, a gzip stream's decompression above all, overlaps DuckDB's
    work); what it raises is raised here, after the blocks before it. Once the run stops
    early, the thread starts no other read, and the run waits for the read under way (at most
    `wait` seconds, for a pipe that may never send more), so that the input's descriptor,
    closed after, is never read again under the number of a file opened next. The files are
    closed by whichever of the two ends last."""
    fds = [_memory_file(b""), _memory_file(b"")]
    free: queue.Queue[int] = queue.Queue()  # files the reader may write into
    for fd in fds:
        free.put(fd)
    written: queue.Queue[int | BaseException | None] = queue.Queue()
    stop = threading.Event()
    closing = threading.Lock()

    def close() -> None:
        with closing:
            while fds:
                os.close(fds.pop())

    def read_unless_stopped(view: memoryview) -> int:
        return 0 if stop.is_set() else readinto(view)

    def write_ahead() -> None:
        try:
            for block, length in blocks(read_unless_stopped):
                fd = free.get()
                if stop.is_set():
                    return
                _refill_memory_file(fd, block, length)
                written.put(fd)
            written.put(None)
        except BaseException as error:  # raised in the reading thread
            written.put(error)
        finally:
            if stop.is_set():  # the reader outlived the run
                close()

    thread = threading.Thread(target=write_ahead, name="replay-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := written.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
            free.put(item)
    finally:
        stop.set()
        free.put(-1)  # a reader waiting for a file: stop
        thread.join(wait)
        if not thread.is_alive():
            close()


def _widen_pipe(fd: int) -> None:
    """A pipe's buffer as large as one read (Linux: F_SETPIPE_SZ; 64 KiB by default, up to
    /proc/sys/fs/pipe-max-size, 1 MiB by default): a read then takes up to that much, not
    64 KiB (1.7 GB through `cat |`: 7.1 s -> 4.7 s). Anything else is left as it is."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, READ)


def _fd_path(fd: int) -> str:
    """The path by which DuckDB opens a file replay opened: no name, so no glob."""
    return f"/dev/fd/{fd}"


def _read_at_least(read: Callable[[int], bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = read(max(size - len(data), 1 << 16))
        if not more:
            break
        data += more
    return data


def row_alerts(entries: list[str]) -> Iterator[tuple[int, str]]:
    """A row's alerts, as the table holds them (each its rule's number, then the alert's JSON
    object): (rule number, alert JSON)."""
    for entry in entries:
        brace = entry.index("{")
        yield int(entry[:brace]), entry[brace:]


def _cells(cells: list[tuple[Any, int]]) -> str:
    shown = []
    for value, width in cells:
        text = "" if value is None else " ".join(str(value).split())
        if width:
            text = text if len(text) <= width else text[: width - 1] + "…"
            text = text.ljust(width)
        shown.append(text)
    return "  ".join(shown).rstrip() + "\n"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _flag(condition: str) -> str:
    """True where a record is not bad and `condition` holds, else false (never NULL). As a
    CASE's WHEN, DuckDB evaluates it as a WHERE clause does, each conjunct on the rows that
    the ones before it left (each disjunct on the rest); a boolean column evaluates every
    part on every row (the conditions of the repository's rules took 0.4 s on 1,000,000
    events that way, 0.15 s this way)."""
    return f'CASE WHEN NOT "replay:bad" AND ({condition}) THEN true ELSE false END'


def base_flag(n: int) -> str:
    """The column of replay's plan query that is true where the nth base rule (of every
    correlation's, as run_replay takes them) matches."""
    return _ident(f"replay:b{n}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
