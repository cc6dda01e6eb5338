"""Engines that execute an emitted query over labelled events: each returns the auditIDs
(case ids) of the events its query matched."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shapes import elastic_kubernetes


def run_eql(query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path) -> set[str]:
    """Elastic's own EQL engine, with Elasticsearch's syntax, over Kubernetes-integration docs."""
    import eql
    from eql.parser import elasticsearch_syntax, ignore_missing_functions

    with elasticsearch_syntax, ignore_missing_functions:
        parsed = eql.parse_query(query)
    hits: list[Any] = []
    engine = eql.PythonEngine()
    engine.add_output_hook(hits.append)
    engine.add_query(parsed)
    docs = [elastic_kubernetes(event) for event in events]
    engine.stream_events([eql.Event("any", n, doc) for n, doc in enumerate(docs)])
    return {e.data["kubernetes"]["audit"]["auditID"] for hit in hits for e in hit.events}


def run_duckdb(query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path) -> set[str]:
    """`convert.py replay`'s engine: the SQL over a JSON-lines audit log, on DuckDB."""
    from dac.replay import run_replay

    log = tmp / "audit.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    run_replay([log], [(rule, query)], out, err)
    return {json.loads(line)["auditID"] for line in out.getvalue().splitlines()}


# engine name -> (convert.py target it executes, runner)
Runner = Callable[[str, Any, Sequence[dict[str, Any]], Path], set[str]]
ENGINES: dict[str, tuple[str, Runner]] = {
    "eql": ("elastic-eql", run_eql),
    "duckdb": ("duckdb", run_duckdb),
}
