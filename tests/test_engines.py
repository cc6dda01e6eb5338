"""Each emitted query that an engine here can run is run over every labelled event in its
platform's shape, and must match exactly the events labelled match_*."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cases import Case, default_label, load_cases, load_env_cases, raw_event
from engines import ENGINES

from convert import TARGETS_BY_NAME

CASES = load_cases()
ENV_CASES = load_env_cases()
# Under one environment's filters an untied target is run on what those filters can change:
# the hand-written cases, the platforms' identities and the corpus lines labelled by name.
FOCUSED = tuple(
    c for c in CASES if not c.id.startswith("corpus-") or c.label != default_label(c.event)
)


def variants(engine: str) -> list[tuple[str, ...]]:
    return TARGETS_BY_NAME[ENGINES[engine][0]].variants()


def cases_for(engine: str, variant: tuple[str, ...]) -> tuple[Case, ...]:
    """Every case for the rule alone and for a platform-tied target; otherwise the focus."""
    full = variant == () or TARGETS_BY_NAME[ENGINES[engine][0]].environments is not None
    return (CASES if full else FOCUSED) + ENV_CASES


RUNS = [(engine, variant) for engine in ENGINES for variant in variants(engine)]
PARAMS = [
    pytest.param(engine, variant, case, id=f"{engine}-{'+'.join(variant) or 'rule'}-{case.id}")
    for engine, variant in RUNS
    for case in cases_for(engine, variant)
]


@pytest.fixture(scope="module")
def hits(query_for, token_rule, tmp_path_factory):
    """The case ids an engine matched with one variant's query, each run once."""
    found: dict[tuple[str, tuple[str, ...]], set[str]] = {}

    def run(engine: str, variant: tuple[str, ...]) -> set[str]:
        if (engine, variant) not in found:
            target, runner = ENGINES[engine]
            events = [raw_event(case) for case in cases_for(engine, variant)]
            tmp: Path = tmp_path_factory.mktemp(engine)
            found[engine, variant] = runner(query_for(target, variant), token_rule, events, tmp)
        return found[engine, variant]

    return run


@pytest.mark.parametrize(("engine", "variant", "case"), PARAMS)
def test_engines(engine: str, variant: tuple[str, ...], case: Case, hits) -> None:
    matched = case.id in hits(engine, variant)
    expected = case.expected(engine, variant)
    assert matched == expected, (
        f"{engine} with {'+'.join(variant) or 'the rule alone'}: "
        f"{'matched' if matched else 'missed'} {case.id}, expected "
        f"{'match' if expected else 'nomatch'}"
    )


@pytest.mark.parametrize(("engine", "variant"), RUNS)
def test_every_engine_alerts_once_per_request(engine: str, variant: tuple[str, ...], hits) -> None:
    """A request logged at two stages (same auditID in the raw log) alerts exactly once."""
    pair = {c.id for c in CASES if c.id.endswith("_of_two_stage_request")}
    assert len(pair) == 2
    assert len(pair & hits(engine, variant)) == 1


@pytest.mark.parametrize(("engine", "variant"), [run for run in RUNS if "eql" in run[0]])
def test_eql_queries_use_only_case_sensitive_operators(engine, variant, query_for) -> None:
    """Elasticsearch's `:`, `like~` and `regex~` ignore case; Kubernetes names do not."""
    query = query_for(ENGINES[engine][0], variant)
    assert not re.search(r'[\w.@]:"|like~|regex~', query), query
