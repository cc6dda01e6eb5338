"""The correlation rules executed: each engine here that runs a target's correlation queries
runs them over every sequence written for the rule (tests/sequences/), in the platform's
shape, and must alert for exactly the groups the sequence is labelled with, once each."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from cases import Sequence, load_sequences
from engines import CORRELATION_ENGINES

from convert import TARGETS_BY_NAME, load_rules
from k8s_audit_detect import correlations
from k8s_audit_detect.rules import rule_stem

SEQUENCES = load_sequences()
RESULT_COLUMNS = {
    "first_seen",
    "last_seen",
    "events",
    "event_count",
    "value_count",
    "temporal",
    "temporal_ordered",
    "sigma_first",
    "sigma_last",
}


def correlation_stems() -> dict[str, str]:
    """Sequence folder name -> the correlation rule's file stem that ends with it."""
    stems = [rule_stem(r) for r in correlations.correlation_rules(load_rules())]
    return {s.rule: next(stem for stem in stems if stem.endswith(s.rule)) for s in SEQUENCES}


STEMS = correlation_stems()


def runs() -> list[tuple[str, tuple[str, ...], Sequence]]:
    """(engine, environments, sequence) for every sequence of a correlation the engine's
    target expresses: without environment filters, and under a sequence's own environment."""
    rules = {rule_stem(r): r for r in correlations.correlation_rules(load_rules())}
    found = []
    for engine, (target_name, _) in CORRELATION_ENGINES.items():
        target = TARGETS_BY_NAME[target_name]
        limits = dict(target.correlation_limits)
        for sequence in SEQUENCES:
            if correlations.limit(limits, rules[STEMS[sequence.rule]]) is not None:
                continue
            if target.environments is not None:  # tied to a platform: its own environment
                if sequence.env is None or sequence.env in target.environments:
                    found.append((engine, target.variants()[0], sequence))
                continue
            found.append((engine, (), sequence))
            if sequence.env is not None:
                found.append((engine, (sequence.env,), sequence))
    return found


RUNS = runs()


def correlation_rule(stem: str, variant: tuple[str, ...]) -> Any:
    """The correlation rule of a file stem, loaded with an environment variant's filters."""
    (rule,) = [
        r for r in correlations.correlation_rules(load_rules(variant)) if rule_stem(r) == stem
    ]
    return rule


def group_key(row: dict[str, Any]) -> str:
    """An engine's alert row as the group it is for: its key columns' values, joined by |."""
    return "|".join(str(value) for name, value in row.items() if name not in RESULT_COLUMNS)


@pytest.mark.parametrize(
    ("engine", "variant", "sequence"),
    RUNS,
    ids=[f"{e}-{'+'.join(v) or 'rule'}-{s.rule}-{s.id}" for e, v, s in RUNS],
)
def test_correlation_engines(engine, variant, sequence, query_for, tmp_path: Path) -> None:
    target, runner = CORRELATION_ENGINES[engine]
    stem = STEMS[sequence.rule]
    rule = correlation_rule(stem, variant)
    rows = runner(query_for(target, variant, stem), rule, sequence.events(), tmp_path)
    keys = [group_key(row) for row in rows]
    assert set(keys) == sequence.expected(variant), rows
    if not engine.endswith("eql"):  # an EQL sequence alerts per match; the others per group
        assert len(keys) == len(set(keys)), f"more than one alert for a group: {rows}"


# Events whose time does not parse: the engines that read the time from the Event itself (replay
# and Spark; elsewhere the platform's own ingestion time or date field holds it) leave them out
# of the correlations instead of failing the query (DuckDB's CAST and Spark's to_timestamp
# under ANSI mode, Spark 4's and Databricks SQL's default, stopped the whole query).
BAD_TIMES = ["2026-11-31T00:00:00.000000Z", "at nine"]
TIMED_ENGINES = ["duckdb", "spark"]
BURST = [s for s in SEQUENCES if s.rule == "serviceaccount_token_minting_burst" and not s.env]


@pytest.mark.parametrize("engine", TIMED_ENGINES)
@pytest.mark.parametrize("sequence", BURST, ids=[s.id for s in BURST])
def test_events_whose_time_does_not_parse_are_left_out(
    engine: str, sequence: Sequence, query_for, tmp_path: Path
) -> None:
    """Each minting-burst sequence with two more mints by its first identity, for accounts of
    their own, at times that do not parse: the query runs (on main it failed), the same groups
    alert as without them, and none lists them."""
    target, runner = CORRELATION_ENGINES[engine]
    stem = STEMS[sequence.rule]
    rule = correlation_rule(stem, ())
    events = sequence.events()
    extra = [
        dict(
            event,
            auditID=f"{event['auditID']}-bad-time-{n}",
            requestURI=f"/api/v1/namespaces/bad-time-{n}/serviceaccounts/sa/token",
            requestReceivedTimestamp=bad,
        )
        for event in events[:1]
        for n, bad in enumerate(BAD_TIMES)
    ]
    rows = runner(query_for(target, (), stem), rule, [*events, *extra], tmp_path)
    assert {group_key(row) for row in rows} == sequence.expected(()), rows
    ids = [e["auditID"] if isinstance(e, dict) else e for r in rows for e in r["events"] or []]
    assert not [i for i in ids if "bad-time" in i], rows


# Events without the correlation's key: every sequence that alerts, again with a copy of each of
# its events that lacks the fields the correlation groups by, joins on (aliases) and counts. An
# event without its group's key is in no group (as replay documents it): the copies make no
# group of their own (the events of three tokens without a credential id are not one token used
# from three places) and join none.
KEYED = [(e, v, s) for e, v, s in RUNS if not v and s.name.startswith("match_")]


def without(event: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """A copy of the event without those fields (Sigma names: audit paths)."""
    from k8s_audit_detect.replay import path_parts

    copied = copy.deepcopy(event)
    for field in fields:
        *parents, last = path_parts(field)
        node: Any = copied
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return copied


@pytest.mark.parametrize(
    ("engine", "variant", "sequence"), KEYED, ids=[f"{e}-{s.rule}-{s.id}" for e, _, s in KEYED]
)
def test_events_without_the_group_key_are_in_no_group(
    engine, variant, sequence, query_for, tmp_path: Path
) -> None:
    target, runner = CORRELATION_ENGINES[engine]
    stem = STEMS[sequence.rule]
    rule = correlation_rule(stem, variant)
    fields = correlations.correlation_fields(rule)
    events = sequence.events()
    keyless = [
        without(dict(event, auditID=f"{event['auditID']}-keyless"), fields) for event in events
    ]
    rows = runner(query_for(target, variant, stem), rule, [*events, *keyless], tmp_path)
    assert {group_key(row) for row in rows} == sequence.expected(variant), rows
    # (an EQL sequence's rows name its group only)
    ids = [e["auditID"] if isinstance(e, dict) else e for r in rows for e in r.get("events") or []]
    assert not [i for i in ids if str(i).endswith("-keyless")], rows


# Replay reads a mark on each base rule's events instead of testing the rule again inside the
# correlation (correlate.correlation_rule): only where it finds the base rule's query there.
MATCHING = [s for e, v, s in RUNS if e == "duckdb" and not v and s.name.startswith("match_")]


@pytest.mark.parametrize("sequence", MATCHING, ids=[f"{s.rule}-{s.id}" for s in MATCHING])
def test_replay_tests_a_base_rule_again_where_it_cannot_read_its_mark(
    sequence: Sequence, query_for, tmp_path: Path, monkeypatch
) -> None:
    """A correlation query that does not hold its base rules' queries as replay's conversion
    writes them (a fork's own postprocessing, say) is run as it is, with the fields those
    rules test kept for it: the same groups alert (with those fields not kept, DuckDB cannot
    bind the query)."""
    from k8s_audit_detect import correlate

    made = []

    def not_found(rule: Any, query: str, bases: Any) -> Any:
        made.append(correlation_rule_of(rule, query, [(b, q + "\n") for b, q in bases]))
        return made[-1]

    correlation_rule_of = correlate.correlation_rule
    monkeypatch.setattr(correlate, "correlation_rule", not_found)
    target, runner = CORRELATION_ENGINES["duckdb"]
    stem = STEMS[sequence.rule]
    query = query_for(target, (), stem)
    rows = runner(query, correlation_rule(stem, ()), sequence.events(), tmp_path)
    assert [rule.query for rule in made] == [query]  # run as it is
    assert {group_key(row) for row in rows} == sequence.expected(()), rows
