"""Replay's correlation rules: each correlation's DuckDB SQL (the duckdb target's, from
k8s_audit_detect/correlation_backends.py) over every input file at once, so a sequence split
across files, or written out of order, is still one sequence. The files are read by one view
with the columns all the correlations need; each correlation gives one alert per correlated
group: the group's key (a credential id, an identity), when it started and ended, the measured
value, and the events that made it.

The files are read once for all correlations: the events any of their base rules match are
kept in a temporary table named as replay's view (`k8s_audit`), which each correlation's
query then reads; the other events are not kept. It plugs into replay after the per-event
rules: `replay_correlations(connection, files, correlations, base_queries, warn)` yields
(rule id, alert line) like replay's per-file pass; a single-pass reader can fill the same
table with `base_condition`s instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k8s_audit_detect.replay import (
    ALERT_FIELDS,
    MAX_REPORTED_LINES,
    VIEW,
    _ident,
    _literal,
    column_expression,
    json_columns,
    malformed_lines,
    rule_fields,
)

if TYPE_CHECKING:
    from sigma.correlations import SigmaCorrelationRule

# Columns of a correlation's result that are not the group's key.
RESULT_COLUMNS = ("first_seen", "last_seen", "events")


def correlation_fields(rule: SigmaCorrelationRule) -> list[str]:
    """Every audit path a correlation reads: its base rules' detection and `fields`, the fields
    its aliases join on, its group-by and its counted field."""
    from sigma.correlations import SigmaCorrelationCondition

    from k8s_audit_detect.correlations import base_rules

    found: list[str] = []
    for base in base_rules(rule):
        found += rule_fields(base)
    found += [field for alias in rule.aliases for field in alias.mapping.values()]
    aliases = {alias.alias for alias in rule.aliases}
    found += [field for field in rule.group_by if field not in aliases]
    if isinstance(rule.condition, SigmaCorrelationCondition) and rule.condition.fieldref:
        refs = rule.condition.fieldref
        found += refs if isinstance(refs, list) else [refs]
    return list(dict.fromkeys([*found, *ALERT_FIELDS]))


SOURCE = f"{VIEW}_source"
TABLE_QUERY = f"SELECT * FROM {VIEW} WHERE "  # how the duckdb target writes a rule's query


def view_sql(files: Sequence[Path], fields: list[str], ignore_errors: bool) -> str:
    columns = ", ".join(f"{_literal(n)}: {_literal(t)}" for n, t in json_columns(fields).items())
    select = ", ".join(f"{column_expression(f)} AS {_ident(f)}" for f in fields)
    paths = ", ".join(_literal(str(path)) for path in files)
    return (
        f"CREATE OR REPLACE TEMP VIEW {SOURCE} AS SELECT {select} FROM read_json([{paths}], "
        f"format = 'newline_delimited', columns = {{{columns}}}, "
        f"ignore_errors = {str(ignore_errors).lower()})"
    )


def base_condition(query: str) -> str:
    """A base rule's condition, from the duckdb target's `SELECT * FROM k8s_audit WHERE ...`."""
    if not query.startswith(TABLE_QUERY):
        raise ValueError(f"not a duckdb target query: {query[:60]}")
    return query[len(TABLE_QUERY) :]


def matched_table_sql(base_queries: Sequence[str]) -> str:
    """The events any base rule matches, read once into replay's table name."""
    where = " OR ".join(f"({base_condition(q)})" for q in base_queries) or "true"
    return (
        f"DROP VIEW IF EXISTS {VIEW}; "  # the per-file pass's view
        f"CREATE OR REPLACE TEMP TABLE {VIEW} AS SELECT * FROM {SOURCE} WHERE {where}"
    )


def alert(rule: SigmaCorrelationRule, row: dict[str, Any]) -> str:
    """One alert line: the rule, the group's key, its span, the value and the events."""
    metric = rule.type.name.lower()
    group = {k: v for k, v in row.items() if k not in (*RESULT_COLUMNS, metric)}
    line = {
        "rule_id": str(rule.id),
        "rule": rule.title,
        "level": rule.level.name.lower() if rule.level else None,
        "correlation": metric,
        "group": group,
        "first_seen": row["first_seen"],
        "last_seen": row["last_seen"],
        metric: row.get(metric),
        "events": row["events"],
    }
    return json.dumps(line, ensure_ascii=False)


def replay_correlations(
    connection: Any,
    files: Sequence[Path],
    correlations: Sequence[tuple[SigmaCorrelationRule, str]],
    base_queries: Sequence[str],
    warn: Callable[[str], None],
    reported: set[Path] | None = None,
) -> Iterator[tuple[str, str]]:
    """(rule id, alert line) for every correlated group in all the files together, the files
    read once (the events their base rules match kept). Files with malformed lines are
    reported (unless already in `reported`) and read without them."""
    import duckdb

    if not correlations:
        return
    fields = list(dict.fromkeys(f for rule, _ in correlations for f in correlation_fields(rule)))
    reported = set() if reported is None else reported
    try:
        connection.execute(view_sql(files, fields, ignore_errors=False))
        connection.execute(matched_table_sql(base_queries))
    except duckdb.InvalidInputException as error:
        if "JSON" not in str(error):
            raise
        for path in files:
            if path in reported:
                continue
            bad = malformed_lines(connection, path)
            for line in bad[:MAX_REPORTED_LINES]:
                warn(f"{path}:{line}: not a JSON object (malformed line skipped)")
            if len(bad) > MAX_REPORTED_LINES:
                warn(f"{path}: {len(bad) - MAX_REPORTED_LINES} more malformed lines skipped")
        connection.execute(view_sql(files, fields, ignore_errors=True))
        connection.execute(matched_table_sql(base_queries))
    yield from correlate_table(connection, correlations)


def correlate_table(
    connection: Any, correlations: Sequence[tuple[SigmaCorrelationRule, str]]
) -> Iterator[tuple[str, str]]:
    """(rule id, alert line) for each correlation's groups, over the table `k8s_audit` of the
    events the base rules match (however it was filled: replay_correlations' own read, or a
    single-pass reader that appends each batch's matches)."""
    for rule, query in correlations:
        result = connection.execute(f"SELECT to_json(alert) FROM ({query}) AS alert")
        for (row,) in result.fetchall():
            yield str(rule.id), alert(rule, json.loads(row))
