"""Rules of our own (tests/rules/, test-only, not shipped) that together use every field family
and modifier SigmaHQ's Kubernetes audit rules use: contains, startswith, endswith, lists,
numbers (responseStatus.code), null, cidr (sourceIPs), re, objectRef.apiGroup, requestURI,
userAgent, annotations, user.groups, user.extra, impersonatedUser, a bare '*' value, the short
name hostPath and category: application. Each is converted for every target; on every engine
here the query runs over the rule's labelled events (tests/rules/<rule>/match_*.json and
nomatch_*.json) in that platform's shape and must match exactly the match_* ones. Where a
target's platform does not record a field, or its language cannot compare it, conversion must
fail with one line naming the target and the field instead (REFUSED)."""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from engines import ENGINES

from convert import TARGETS, TARGETS_BY_NAME, convert_target
from k8s_audit_detect import UserError

RULES = Path(__file__).resolve().parent / "rules"
STEMS = sorted(path.stem for path in RULES.glob("*.yml"))


@dataclass(frozen=True)
class RuleCase:
    rule: str
    name: str  # match_* or nomatch_*, named for why
    event: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.rule}/{self.name}"

    def raw(self) -> dict[str, Any]:
        """The event with its case id as auditID, so that every engine's hits name it."""
        return self.event | {"auditID": self.id}


@functools.cache
def rule_cases(stem: str) -> tuple[RuleCase, ...]:
    return tuple(
        RuleCase(stem, path.stem, json.loads(path.read_text(encoding="utf-8")))
        for path in sorted((RULES / stem).glob("*.json"))
    )


# (target, rule) -> the field the target refuses, and why (in the words of its line).
ARRAYS_IN_KQL = "dynamic array"
REFUSED: dict[tuple[str, str], tuple[str, str]] = {
    # GKE's Cloud Audit Logs: no request URI, HTTP status, impersonation, groups, objects
    **{
        (gke, rule): reason
        for gke in ("elastic-gke-lucene", "elastic-gke-eql", "elastic-gke-esql")
        for rule, reason in {
            "exec_into_pod_with_shell": ("requestURI", "carry no such field"),
            "exec_command_matching_shell_pattern": ("requestURI", "carry no such field"),
            "denied_request_anonymous_or_forbidden": ("responseStatus.code", "no HTTP status"),
            "impersonation_by_non_admin": ("impersonatedUser.username", "carry no such field"),
            "masters_member_with_service_account_token": ("user.groups", "carry no such field"),
            "pod_with_host_path_volume": ("hostPath", "unverified"),
        }.items()
    },
    # Elastic's Kubernetes integration: user.groups is `text`; EQL and ES|QL skip `flattened`
    # fields, and ES|QL compares multivalued ones (source.ip) as null (EQL: unverified)
    **{
        (target, "masters_member_with_service_account_token"): ("user.groups", "`text`")
        for target in ("elastic-lucene", "elastic-eql", "elastic-esql")
    },
    ("elastic-eql", "api_call_from_untrusted_network"): ("sourceIPs", "multi-valued"),
    ("elastic-esql", "api_call_from_untrusted_network"): ("sourceIPs", "multivalued"),
    ("elastic-eql", "pod_with_host_path_volume"): ("hostPath", "flattened"),
    ("elastic-esql", "pod_with_host_path_volume"): ("hostPath", "flattened"),
    # flattened keywords (Elastic's Azure integration): no CIDR, no regexp
    ("elastic-aks-lucene", "api_call_from_untrusted_network"): ("sourceIPs", "flattened"),
    ("elastic-aks-lucene", "exec_command_matching_shell_pattern"): ("requestURI", "flattened"),
    ("opensearch", "api_call_from_untrusted_network"): ("sourceIPs", "not as an `ip` field"),
    # KQL: arrays compared whole by the Kusto backend; AKSAudit has no impersonation column
    **{
        (kql, rule): (field, ARRAYS_IN_KQL)
        for kql in ("sentinel-aksaudit", "sentinel-aksauditadmin", "sentinel-azurediagnostics")
        for rule, field in {
            "api_call_from_untrusted_network": "sourceIPs",
            "masters_member_with_service_account_token": "user.groups",
        }.items()
    },
    **{
        (kql, "pod_with_host_path_volume"): ("hostPath", "pod spec's lists")
        for kql in ("sentinel-aksaudit", "sentinel-aksauditadmin", "sentinel-azurediagnostics")
    },
    **{
        (kql, "impersonation_by_non_admin"): ("impersonatedUser.username", "no column")
        for kql in ("sentinel-aksaudit", "sentinel-aksauditadmin")
    },
    # arrays have no single field on Loki, LogScale, CloudWatch and Sumo Logic
    **{
        (target, rule): (field, "array")
        for target in ("loki", "logscale", "cloudwatch-eks", "sumologic-cse", "sumologic-cse-eks")
        for rule, field in {
            "api_call_from_untrusted_network": "sourceIPs",
            "masters_member_with_service_account_token": "user.groups",
            "pod_with_host_path_volume": "hostPath",
        }.items()
    },
    # Elastic's AWS integration (EKS): sourceIPs a keyword, no request object indexed; EQL
    # and ES|QL on its multi-valued groups as for the Kubernetes integration
    **{
        (target, stem): reason
        for target in ("elastic-eks-lucene", "elastic-eks-eql", "elastic-eks-esql")
        for stem, reason in {
            "api_call_from_untrusted_network": ("sourceIPs", "not an `ip` field"),
            "pod_with_host_path_volume": ("hostPath", "does not index"),
        }.items()
    },
    ("elastic-eks-eql", "masters_member_with_service_account_token"): ("groups", "multi-valued"),
    ("elastic-eks-esql", "masters_member_with_service_account_token"): ("groups", "multivalued"),
    # regular expressions: Splunk's backend moves them after the search; Sumo's unverified
    ("splunk", "exec_command_matching_shell_pattern"): ("requestURI", "`| regex`"),
    ("sumologic-cse", "exec_command_matching_shell_pattern"): ("requestURI", "unverified"),
    ("sumologic-cse-eks", "exec_command_matching_shell_pattern"): ("requestURI", "unverified"),
    # Spark: CIDR functions are Databricks's; the pod spec's lists are out of the backend's reach
    ("spark-sql", "api_call_from_untrusted_network"): ("sourceIPs", "Databricks"),
    ("spark-sql", "pod_with_host_path_volume"): ("hostPath", "pod spec's lists"),
}

# (engine, case id) whose platform records the event differently, so the label does not hold
# there: the reason.
PLATFORM_DIFFERENCES: dict[tuple[str, str], str] = {
    **{
        (engine, "api_call_from_untrusted_network/match_second_address_in_range_behind_proxy"): (
            "GKE's record holds one caller IP (callerIp -> source.ip), the first of sourceIPs"
        )
        for engine in ("gke-lucene", "gke-eql")
    },
    **{
        ("kql-aksauditadmin", f"denied_request_anonymous_or_forbidden/{case}"): (
            "AKSAuditAdmin holds no get or list events (aksauditadmin.md)"
        )
        for case in ("match_forbidden_by_rbac", "match_anonymous_unauthorized")
    },
}


@functools.cache
def converted(target: str, stem: str) -> str | UserError:
    """The target's query for one test rule, or its refusal."""
    from sigma.collection import SigmaCollection

    collection = SigmaCollection.load_ruleset([RULES / f"{stem}.yml"])
    try:
        return convert_target(TARGETS_BY_NAME[target], collection)[stem]
    except UserError as error:
        return error


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("target", [t.name for t in TARGETS])
def test_rule_converts_or_is_refused_in_one_line(target: str, stem: str) -> None:
    result = converted(target, stem)
    if (target, stem) not in REFUSED:
        assert isinstance(result, str) and result, f"{target} refused {stem}: {result}"
        return
    field, reason = REFUSED[target, stem]
    assert isinstance(result, UserError), f"{target} converted {stem}: {result}"
    line = str(result)
    assert "\n" not in line and f"target {target}" in line, line
    assert field in line and reason in line, line


ENGINE_RUNS = [
    (engine, stem)
    for engine in ENGINES
    for stem in STEMS
    if (ENGINES[engine][0], stem) not in REFUSED
]
PARAMS = [
    pytest.param(engine, stem, case, id=f"{engine}-{stem}-{case.name}")
    for engine, stem in ENGINE_RUNS
    for case in rule_cases(stem)
]


@pytest.fixture(scope="module")
def rule_hits(tmp_path_factory):
    """The case ids an engine matched with one rule's query, each run once."""
    from sigma.collection import SigmaCollection

    found: dict[tuple[str, str], set[str]] = {}

    def run(engine: str, stem: str) -> set[str]:
        if (engine, stem) not in found:
            target, runner = ENGINES[engine]
            query = converted(target, stem)
            assert isinstance(query, str), query
            (rule,) = SigmaCollection.load_ruleset([RULES / f"{stem}.yml"]).rules
            events = [case.raw() for case in rule_cases(stem)]
            tmp: Path = tmp_path_factory.mktemp(f"{engine}-{stem}")
            found[engine, stem] = runner(query, rule, events, tmp)
        return found[engine, stem]

    return run


@pytest.mark.parametrize(("engine", "stem", "case"), PARAMS)
def test_rule_engines(engine: str, stem: str, case: RuleCase, rule_hits) -> None:
    matched = case.id in rule_hits(engine, stem)
    expected = case.name.startswith("match_") != ((engine, case.id) in PLATFORM_DIFFERENCES)
    assert matched == expected, (
        f"{engine}: {'matched' if matched else 'missed'} {case.id}, expected "
        f"{'match' if expected else 'nomatch'}"
        + (
            f" ({PLATFORM_DIFFERENCES[engine, case.id]})"
            if (engine, case.id) in PLATFORM_DIFFERENCES
            else ""
        )
    )


def test_every_rule_has_labelled_events_both_ways() -> None:
    for stem in STEMS:
        names = [case.name for case in rule_cases(stem)]
        assert any(n.startswith("match_") for n in names), stem
        assert any(n.startswith("nomatch_") for n in names), stem
        assert all(n.startswith(("match_", "nomatch_")) for n in names), stem


def test_every_platform_difference_and_refusal_is_used() -> None:
    """No stale entry: each listed difference is a case of an engine run, each refusal a pair."""
    runs = {(engine, case.id) for engine, stem in ENGINE_RUNS for case in rule_cases(stem)}
    assert set(PLATFORM_DIFFERENCES) <= runs
    assert {stem for _, stem in REFUSED} <= set(STEMS)
    assert {target for target, _ in REFUSED} <= set(TARGETS_BY_NAME)


def test_replay_runs_every_rule_at_once(tmp_path: Path) -> None:
    """`convert.py replay` with all these rules over all their events, in one run: exit 0;
    each rule alerts on exactly its own match_* events among its own, and on the other rules'
    events exactly as when it runs alone."""
    from sigma.collection import SigmaCollection

    from k8s_audit_detect.replay import plain_rule, run_replay
    from k8s_audit_detect.rules import rule_stem, sigma_rules

    collection = SigmaCollection.load_ruleset([RULES / f"{stem}.yml" for stem in STEMS])
    queries = convert_target(TARGETS_BY_NAME["duckdb"], collection)
    stems = {str(rule.id): rule_stem(rule) for rule in sigma_rules(collection)}
    pairs = [plain_rule(rule, queries[rule_stem(rule)]) for rule in sigma_rules(collection)]
    log = tmp_path / "audit.jsonl"
    events = [case.raw() for stem in STEMS for case in rule_cases(stem)]
    log.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")

    def replay(rules: list) -> list[tuple[str, str]]:
        out, err = io.StringIO(), io.StringIO()
        assert run_replay([log], rules, out, err) == 0, err.getvalue()
        alerts = [json.loads(line) for line in out.getvalue().split("\n") if line]
        return [(stems[a["rule_id"]], a["auditID"]) for a in alerts]

    together = replay(pairs)
    assert len(together) == len(set(together))  # once each
    assert sorted(together) == sorted(alert for pair in pairs for alert in replay([pair]))
    own = {(stem, case_id) for stem, case_id in together if case_id.startswith(stem + "/")}
    assert own == {
        (stem, case.id)
        for stem in STEMS
        for case in rule_cases(stem)
        if case.name.startswith("match_")
    }


def test_loki_queries_of_every_rule_parse() -> None:
    """No LogQL engine here: each test rule's Loki query parses with Grafana's grammar."""
    from test_logql import parse

    queries = [converted("loki", stem) for stem in STEMS if ("loki", stem) not in REFUSED]
    assert queries and all(isinstance(query, str) for query in queries)
    assert parse([str(query) for query in queries]) == ["ok"] * len(queries)


def test_splunk_tuning_macro_of_a_rule_without_name_is_its_file_name() -> None:
    """SigmaHQ's rules (and these) have no `name`: the Splunk search ends in the macro the
    Splunk app defines for the rule's file, not in `None_filter`."""
    for stem in STEMS:
        query = converted("splunk", stem)
        if isinstance(query, str):
            assert query.endswith(f"| `{stem}_filter`"), query
