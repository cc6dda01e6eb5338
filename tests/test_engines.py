"""Each emitted query that an engine here can run is run over every labelled event in its
platform's shape, and must match exactly the events labelled match_*."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cases import Case, load_cases, raw_event
from engines import ENGINES

CASES = load_cases()


@pytest.fixture(scope="module")
def hits(query_for, token_rule, tmp_path_factory) -> dict[str, set[str]]:
    events = [raw_event(case) for case in CASES]
    found = {}
    for name, (target, run) in ENGINES.items():
        tmp: Path = tmp_path_factory.mktemp(name)
        found[name] = run(query_for(target), token_rule, events, tmp)
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("engine", ENGINES)
def test_engines(engine: str, case: Case, hits: dict[str, set[str]]) -> None:
    matched = case.id in hits[engine]
    expected = case.expected(engine)
    assert matched == expected, (
        f"{engine}: {'matched' if matched else 'missed'} {case.id}, expected "
        f"{'match' if expected else 'nomatch'}"
    )


def test_every_engine_alerts_once_per_request(hits: dict[str, set[str]]) -> None:
    """A request logged at two stages (same auditID in the raw log) alerts exactly once."""
    pair = {c.id for c in CASES if c.id.endswith("_of_two_stage_request")}
    assert len(pair) == 2
    for engine, found in hits.items():
        assert len(pair & found) == 1, engine


@pytest.mark.parametrize("engine", [name for name, (target, _) in ENGINES.items() if "eql" in name])
def test_eql_queries_use_only_case_sensitive_operators(engine: str, query_for) -> None:
    """Elasticsearch's `:`, `like~` and `regex~` ignore case; Kubernetes names do not."""
    query = query_for(ENGINES[engine][0])
    assert not re.search(r'[\w.@]:"|like~|regex~', query), query
