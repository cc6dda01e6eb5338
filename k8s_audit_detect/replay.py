"""Replay Kubernetes audit log files through the rules' SQL on DuckDB.

Each rule's query is the duckdb target's, run verbatim over a view `k8s_audit` that exposes
every audit Event path the query or the rule's `fields` use as one column named by the path.
The file is read once per rule by DuckDB's JSON reader with an explicit column list. Only when
that read fails on a malformed line are the bad lines located (file and line number), reported,
and skipped, and the file read again with errors ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from k8s_audit_detect import UserError

if TYPE_CHECKING:
    from sigma.rule import SigmaRule

# Audit Event paths whose DuckDB type is not VARCHAR (audit.k8s.io/v1: the status code is
# an integer; sourceIPs, the groups and every user.extra value are lists of strings).
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
# Maps whose keys contain dots: "annotations.authorization.k8s.io/decision" is the key
# "authorization.k8s.io/decision" of "annotations", read as a struct of just the keys the
# rule needs; user.extra's values are lists.
DOTTED_KEY_MEMBERS = ("annotations", "user.extra", "impersonatedUser.extra")
LIST_KEY_MEMBERS = ("user.extra", "impersonatedUser.extra")
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
# Always carried into an alert, whatever the rule lists in `fields`.
ALERT_FIELDS = ("auditID", "stage", "requestReceivedTimestamp")
VIEW = "k8s_audit"
MAX_REPORTED_LINES = 20
BATCH = 2048


# SigmaHQ's short names the duckdb pipeline maps to an Event path (the column the query reads).
ALIASES = {"apiGroup": "objectRef.apiGroup"}


def rule_fields(rule: SigmaRule) -> list[str]:
    """The audit paths a rule tests in its detection, then those it lists in `fields`."""
    found: list[str] = []

    def walk(detection: Any) -> None:
        for item in detection.detection_items:
            if hasattr(item, "detection_items"):
                walk(item)
            elif item.field and ALIASES.get(item.field, item.field) not in found:
                found.append(ALIASES.get(item.field, item.field))

    for detection in rule.detection.detections.values():
        walk(detection)
    return found + [f for f in [*ALERT_FIELDS, *(rule.fields or [])] if f not in found]


def path_parts(field: str) -> list[str]:
    """The JSON members a Sigma field name walks: annotations.<key with dots> is two."""
    for member in DOTTED_KEY_MEMBERS:
        if field.startswith(member + "."):
            return [*member.split("."), field.removeprefix(member + ".")]
    return field.split(".")


def field_type(field: str) -> str:
    if field.startswith(tuple(member + "." for member in LIST_KEY_MEMBERS)):
        return "VARCHAR[]"
    return FIELD_TYPES.get(field, "VARCHAR")


def json_columns(fields: list[str]) -> dict[str, str]:
    """DuckDB read_json `columns`: the top-level members those paths need, with their types."""
    tree: dict[str, Any] = {}
    for field in fields:
        field = SHORT_NAMES[field][0] if field in SHORT_NAMES else field
        parts = path_parts(field)
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node.setdefault(parts[-1], field_type(field))

    def sql_type(node: Any, path: str) -> str:
        if isinstance(node, str):
            return node
        members = ", ".join(
            f"{_ident(name)} {sql_type(child, f'{path}.{name}'.lstrip('.'))}"
            for name, child in node.items()
        )
        return f"STRUCT({members})" + ("[]" if path in OBJECT_LISTS else "")

    return {name: sql_type(node, name) for name, node in tree.items()}


def column_expression(field: str) -> str:
    """How the view reads one audit path out of the JSON columns."""
    if field in SHORT_NAMES:
        return SHORT_NAMES[field][1]
    parts = path_parts(field)
    return ".".join(_ident(part) for part in parts)


def view_sql(path: Path, fields: list[str], ignore_errors: bool) -> str:
    columns = ", ".join(f"{_literal(n)}: {_literal(t)}" for n, t in json_columns(fields).items())
    select = ", ".join(f"{column_expression(f)} AS {_ident(f)}" for f in fields)
    return (
        f"CREATE OR REPLACE TEMP VIEW {VIEW} AS SELECT {select} FROM read_json("
        f"{_literal(str(path))}, format = 'newline_delimited', columns = {{{columns}}}, "
        f"ignore_errors = {str(ignore_errors).lower()})"
    )


def malformed_lines(connection: Any, path: Path) -> list[int]:
    """Line numbers (from 1) that are not a JSON object; blank lines are not counted as bad."""
    rows = connection.execute(
        "SELECT n FROM (SELECT row_number() OVER () AS n, line FROM read_csv("
        "?, columns = {'line': 'VARCHAR'}, delim = chr(0), quote = '', escape = '', "
        "header = false, auto_detect = false, max_line_size = 1073741824)) "
        "WHERE trim(line) <> '' AND (NOT json_valid(line) OR json_type(line) <> 'OBJECT')",
        [str(path)],
    ).fetchall()
    return [row[0] for row in rows]


def replay_file(
    connection: Any, path: Path, rules: list[tuple[SigmaRule, str]], warn: Callable[[str], None]
) -> Iterator[tuple[str, str]]:
    """(rule id, alert JSON line) for one file, streamed: DuckDB renders each matching row."""
    import duckdb

    ignore_errors = False
    for rule, query in rules:
        fields = rule_fields(rule)
        header = json.dumps(
            {
                "rule_id": str(rule.id),
                "rule": rule.title,
                "level": rule.level.name.lower() if rule.level else None,
                "file": str(path),
            },
            ensure_ascii=False,
        )[:-1]
        alerts = f"SELECT to_json(alert) FROM ({query}) AS alert"
        emitted = 0
        while True:
            try:
                connection.execute(view_sql(path, fields, ignore_errors))
                result = connection.execute(alerts)
                skip = emitted  # after a restart, rows already sent come again first, in order
                while batch := result.fetchmany(BATCH):
                    for (row,) in batch:
                        if skip:
                            skip -= 1
                            continue
                        emitted += 1
                        yield str(rule.id), f"{header}, {row[1:]}"
                break
            except duckdb.InvalidInputException as error:
                if ignore_errors or "JSON" not in str(error):
                    raise
                bad = malformed_lines(connection, path)
                for line in bad[:MAX_REPORTED_LINES]:
                    warn(f"{path}:{line}: not a JSON object (malformed line skipped)")
                if len(bad) > MAX_REPORTED_LINES:
                    warn(f"{path}: {len(bad) - MAX_REPORTED_LINES} more malformed lines skipped")
                if not bad:
                    first = str(error).splitlines()[0]
                    warn(f"{path}: {first}; events DuckDB could not read were skipped")
                ignore_errors = True


def run_replay(
    files: list[Path], rules: list[tuple[SigmaRule, str]], out: TextIO, err: TextIO
) -> int:
    """`convert.py replay`: alerts as JSON lines on out, malformed lines and a summary on err."""
    import duckdb

    for path in files:
        if not path.is_file():
            raise UserError(
                f"replay: {path}: no such file; pass Kubernetes audit log files "
                "(one JSON event per line, .gz allowed)"
            )
    connection = duckdb.connect()
    connection.execute("SET enable_progress_bar = false")  # stdout carries only alerts
    counts = {str(rule.id): 0 for rule, _ in rules}

    def warn(message: str) -> None:
        print(f"replay: {message}", file=err)

    for path in files:
        try:
            for rule_id, alert in replay_file(connection, path, rules, warn):
                counts[rule_id] += 1
                out.write(alert + "\n")
        except duckdb.Error as error:
            first = str(error).splitlines()[0]
            raise UserError(
                f"replay: {path}: cannot be read as a JSON-lines audit log ({first}); "
                "pass raw audit.k8s.io/v1 events, one per line"
            ) from error
    total = sum(counts.values())
    detail = ", ".join(f"{rule.title}: {counts[str(rule.id)]}" for rule, _ in rules)
    warn(f"{len(files)} files, {len(rules)} rules, {total} alerts ({detail})")
    return 0


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
