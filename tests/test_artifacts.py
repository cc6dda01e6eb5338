"""The deployable artifacts: each parses with its format's own tooling where the registries
have one, carries the rule's own metadata, and embeds exactly the query the engines ran. Every
rule has its entry (a fork's rules too); the TokenRequest rule's is checked field by field."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
import yaml
from addonfactory_splunk_conf_parser_lib import TABConfigParser
from cases import load_cases, load_env_cases, raw_event
from conftest import RULE_STEM
from engines import run_kql, run_kql_azurediagnostics
from shapes import elastic_kubernetes_types

from convert import ARTIFACTS, QUERIES_DIR, TARGETS_BY_NAME
from k8s_audit_detect.artifacts import LEVELS, arm_literals, triage_guide
from k8s_audit_detect.rules import rule_stem

ARTIFACT = {a.name: a for a in ARTIFACTS}


def variants_of(artifact_name: str) -> list[tuple[str, ...]]:
    return TARGETS_BY_NAME[ARTIFACT[artifact_name].target].variants()


KIBANA_ALL = [(n, v) for n in ARTIFACT if n.startswith("kibana-") for v in variants_of(n)]
# the Lucene rules carry the plain rule; the ES|QL and EQL rules the correlations
KIBANA = [(n, v) for n, v in KIBANA_ALL if ARTIFACT[n].options["type"] == "query"]


@pytest.mark.parametrize(
    ("name", "variant"), KIBANA, ids=[f"{n}-{'+'.join(v) or 'rule'}" for n, v in KIBANA]
)
def test_kibana_rule(name, variant, generated, query_for, token_rule, all_rules) -> None:
    target = ARTIFACT[name].target
    # the rule alone, and the GKE and AKS integrations' own environment, keep their old id
    tied = TARGETS_BY_NAME[target].environments is not None
    expected = f"{name}/{'+'.join(variant)}" if variant and not tied else name
    for each in all_rules:
        stem = rule_stem(each)
        text = generated[QUERIES_DIR / name / "+".join(variant) / f"{stem}.ndjson"]
        (line,) = text.splitlines()
        document = json.loads(line)
        assert document["query"] == query_for(target, variant, stem)
        assert document["rule_id"] == str(uuid.uuid5(each.id, expected))
        assert (document["type"], document["language"]) == ("query", "lucene")
        assert document["index"] == list(ARTIFACT[name].options["index"])
        severity, risk_score, _, _ = LEVELS[each.level.name.lower()]
        assert (document["name"], document["severity"], document["risk_score"]) == (
            each.title,
            severity,
            risk_score,
        )
        assert document["false_positives"] == each.falsepositives
        assert document["references"] == each.references
        assert document["note"] == triage_guide(each)
    rule = json.loads(generated[QUERIES_DIR / name / "+".join(variant) / f"{RULE_STEM}.ndjson"])
    assert (rule["name"], rule["severity"], rule["risk_score"]) == (token_rule.title, "medium", 47)
    (threat,) = rule["threat"]
    assert threat["tactic"]["id"] == "TA0006"
    ids = {t["id"] for t in threat["technique"]} | {
        s["id"] for t in threat["technique"] for s in t["subtechnique"]
    }
    assert ids == {"T1528", "T1552", "T1552.007"}
    assert (rule["from"], rule["interval"]) == ("now-6m", "5m")


def test_kibana_rule_ids_are_unique_across_every_ndjson_file(generated, all_rules) -> None:
    """One Kibana holds every variant side by side only if no two share a rule_id: importing
    a second rule with the same rule_id is refused, or with overwrite replaces the first."""
    ids: dict[str, list[str]] = {}
    for path, text in generated.items():
        if path.suffix == ".ndjson":
            for line in text.splitlines():
                ids.setdefault(json.loads(line)["rule_id"], []).append(str(path))
    files = sum(1 for path in generated if path.suffix == ".ndjson")
    lucene = [
        n for n in ARTIFACT if n.startswith("kibana-") and ARTIFACT[n].options["type"] == "query"
    ]
    # every rule's Lucene rule per variant, and the correlations' ES|QL and EQL rules
    assert len(ids) == files > sum(len(variants_of(n)) for n in lucene) * len(all_rules)
    shared = {rule_id: paths for rule_id, paths in ids.items() if len(paths) > 1}
    assert not shared


# Platforms that log one request twice (AKS's two audit categories) and the field Kibana
# suppresses the second alert by: the audit ID, a field each integration indexes.
SUPPRESSED_BY = {
    "kibana-kubernetes": "kubernetes.audit.auditID",
    "kibana-aks": "azure.platformlogs.properties.log.auditID",
}


@pytest.mark.parametrize("name", SUPPRESSED_BY)
def test_kibana_rule_alerts_once_per_audited_request(name, generated, all_rules) -> None:
    for variant, stem in [(v, rule_stem(r)) for v in variants_of(name) for r in all_rules]:
        text = generated[QUERIES_DIR / name / "+".join(variant) / f"{stem}.ndjson"]
        suppression = json.loads(text)["alert_suppression"]
        assert suppression["group_by"] == [SUPPRESSED_BY[name]]
        assert suppression["duration"] == {"value": 6, "unit": "m"}  # the rule's look-back
        assert suppression["missing_fields_strategy"] == "doNotSuppress"
    assert elastic_kubernetes_types("kubernetes.audit.auditID") == "keyword"


SPLUNK = [("splunk-app", v) for v in variants_of("splunk-app")]


@pytest.mark.parametrize(
    ("name", "variant"), SPLUNK, ids=["+".join(v) or "rule" for _, v in SPLUNK]
)
def test_splunk_app(
    name, variant, generated, query_for, token_rule, all_rules, correlation_rules
) -> None:
    folder = QUERIES_DIR / name / "+".join(variant) / "k8s_token_detect"

    def conf(path: str) -> TABConfigParser:
        parser = TABConfigParser()
        parser.read_string(generated[folder / path])
        return parser

    searches = conf("default/savedsearches.conf")
    search = searches[token_rule.title]
    assert search["search"] == query_for("splunk", variant)
    assert search["cron_schedule"] == "*/5 * * * *"
    assert (search["dispatch.earliest_time"], search["dispatch.latest_time"]) == ("-6m@m", "now")
    assert (search["enableSched"], search["alert.track"], search["alert.severity"]) == (
        "1",
        "1",
        "3",
    )
    macros = conf("default/macros.conf")
    assert "kube_audit" in macros.sections()
    assert macros[f"{token_rule.name}_filter"]["definition"] == "search *"
    # one search and one tuning macro per rule, and per correlation rule
    every = [*all_rules, *correlation_rules]
    assert sorted(searches.sections()) == sorted(rule.title for rule in every)
    assert sorted(macros.sections()) == sorted(
        ["kube_audit", *(f"{rule.name}_filter" for rule in every)]
    )
    for rule in all_rules:
        assert searches[rule.title]["search"] == query_for("splunk", variant, rule_stem(rule))
        _, _, severity, _ = LEVELS[rule.level.name.lower()]
        assert searches[rule.title]["alert.severity"] == str(severity)
    app = conf("default/app.conf")
    assert app["package"]["id"] == app["id"]["name"] == "k8s_token_detect"
    assert app["id"]["version"] == app["launcher"]["version"]
    manifest = json.loads(generated[folder / "app.manifest"])
    assert manifest["info"]["id"]["name"] == "k8s_token_detect"
    assert manifest["info"]["id"]["version"] == app["id"]["version"]
    meta = conf("metadata/default.meta")
    assert meta["savedsearches"]["export"] == meta["macros"]["export"] == "system"
    # the global stanza [] (which this parser skips; AppInspect reads it, below)
    global_access = "\n[]\naccess = read : [ * ], write : [ admin, sc_admin ]\n"
    assert global_access in generated[folder / "metadata/default.meta"]


def test_splunk_input_macro_is_splunks_own(generated) -> None:
    """`kube_audit` as Splunk's content defines it (splunk/security_content
    macros/kube_audit.yml: source="kubernetes"), its description naming the sourcetypes
    Splunk's content reads audit Events with: _json (data_sources/kubernetes_audit.yml) and,
    for EKS through the Splunk Add-on for AWS, aws:cloudwatchlogs:eks
    (macros/aws_cloudwatchlogs_eks.yml)."""
    for variant in variants_of("splunk-app"):
        folder = QUERIES_DIR / "splunk-app" / "+".join(variant) / "k8s_token_detect"
        macros = TABConfigParser()
        macros.read_string(generated[folder / "default/macros.conf"])
        assert macros["kube_audit"]["definition"] == 'source="kubernetes"'
        description = macros["kube_audit"]["description"]
        assert 'sourcetype="_json"' in description
        assert 'sourcetype="aws:cloudwatchlogs:eks"' in description


# Splunk AppInspect (splunk-appinspect on PyPI), offline: --skip-trusted-libraries-update keeps
# it from fetching its trusted-libraries list. Precert mode with no tag runs every check; the
# Splunk Cloud tag sets are the ones Splunk Cloud vets a private app with.
SPLUNK_CLOUD_TAG_SETS = (
    "cloud",
    "private_app",
    "private_classic",
    "private_victoria",
    "migration_victoria",
)
NOT_PASSING = ("failure", "error", "future_failure", "warning", "skipped", "manual_check")


def splunk_package(generated: dict[Path, str], variant: tuple[str, ...], tmp: Path) -> Path:
    """The app as a user packages it for Splunk Cloud: tar -czf k8s_token_detect.tgz."""
    folder = QUERIES_DIR / "splunk-app" / "+".join(variant)
    for path, content in generated.items():
        if path.is_relative_to(folder / "k8s_token_detect"):
            target = tmp / "app" / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
    package = tmp / "k8s_token_detect.tgz"
    with tarfile.open(package, "w:gz") as tar:
        tar.add(tmp / "app" / "k8s_token_detect", arcname="k8s_token_detect")
    return package


def appinspect(package: Path, tags: tuple[str, ...] = ()) -> list[dict]:
    """Every check AppInspect ran on the package (precert mode), with its result and tags."""
    report = package.parent / f"appinspect-{'+'.join(tags) or 'all'}.json"
    command = [
        sys.executable,
        *("-m", "splunk_appinspect.main", "inspect", str(package), "--mode", "precert"),
        *("--skip-trusted-libraries-update", "--max-messages", "all"),
        *("--data-format", "json", "--output-file", str(report)),
    ]
    for tag in tags:
        command += ["--included-tags", tag]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (app,) = json.loads(report.read_text(encoding="utf-8"))["reports"]
    return [check for group in app["groups"] for check in group["checks"]]


def not_passing(checks: list[dict]) -> list[tuple[str, str, list[str]]]:
    return [
        (c["name"], c["result"], [m["message"] for m in c["messages"]])
        for c in checks
        if c["result"] in NOT_PASSING
    ]


@pytest.mark.parametrize("variant", variants_of("splunk-app"), ids=lambda v: "+".join(v) or "rule")
def test_splunk_app_passes_appinspect(variant, generated, tmp_path) -> None:
    """Every check of every tag set passes (no failure, error, warning or manual check), so
    the app installs on Splunk Cloud as a private app."""
    checks = appinspect(splunk_package(generated, variant, tmp_path))
    assert not not_passing(checks)
    assert sum(c["result"] == "success" for c in checks) >= 80
    for tag in SPLUNK_CLOUD_TAG_SETS:
        assert any(tag in c["tags"] and c["result"] == "success" for c in checks), tag
    names = {c["name"] for c in checks if c["result"] == "success"}
    assert {"check_meta_default_write_access", "check_for_valid_package_id"} <= names


@pytest.mark.parametrize("tag", SPLUNK_CLOUD_TAG_SETS)
def test_splunk_app_passes_appinspect_splunk_cloud_tag_set(tag, generated, tmp_path) -> None:
    """AppInspect run with one Splunk Cloud tag set, as Splunk Cloud's vetting selects it."""
    checks = appinspect(splunk_package(generated, (), tmp_path), (tag,))
    assert checks and all(tag in c["tags"] for c in checks)
    assert not not_passing(checks)


SENTINEL = [n for n in ARTIFACT if n.startswith("sentinel-rules-")]
RUNNERS = {"AzureDiagnostics": run_kql_azurediagnostics}


def sentinel_file(
    name: str, generated: dict[Path, str], extension: str, stem: str = RULE_STEM
) -> str:
    (variant,) = variants_of(name)
    table = ARTIFACT[name].options["table"].lower()
    return generated[QUERIES_DIR / name / "+".join(variant) / f"{stem}_{table}.{extension}"]


def runs_like_the_tested_query(name: str, deployed: str, tested: str, rule, tmp: Path) -> None:
    """The deployed query (with its entity columns) matches exactly what the tested one does."""
    run = RUNNERS.get(ARTIFACT[name].options["table"], run_kql)
    events = [raw_event(c) for c in load_cases() + load_env_cases()]
    matched = run(tested, rule, events, tmp)
    assert matched and run(deployed, rule, events, tmp) == matched


@pytest.mark.parametrize("name", SENTINEL)
def test_sentinel_rule_runs_like_the_tested_query(
    name, generated, query_for, token_rule, all_rules, tmp_path
) -> None:
    (variant,) = variants_of(name)
    target = ARTIFACT[name].target
    columns = ARTIFACT[name].options["entity_columns"]
    for rule in all_rules:
        document = yaml.safe_load(sentinel_file(name, generated, "yaml", rule_stem(rule)))
        assert (
            document["query"] == query_for(target, variant, rule_stem(rule)) + "\n" + columns + "\n"
        )
        assert (document["name"], document["kind"]) == (rule.title, "Scheduled")
    document = yaml.safe_load(sentinel_file(name, generated, "yaml"))
    tested = query_for(target, variant)
    assert document["query"] == tested + "\n" + columns + "\n"
    assert document["query"].startswith(tested + "\n| extend AccountName = ")
    assert document["kind"] == "Scheduled" and document["severity"] == "Medium"
    assert (document["queryFrequency"], document["queryPeriod"]) == ("5m", "6m")
    assert (document["triggerOperator"], document["triggerThreshold"]) == ("gt", 0)
    assert document["tactics"] == ["CredentialAccess"]
    assert document["relevantTechniques"] == ["T1528", "T1552.007"]
    assert {m["entityType"] for m in document["entityMappings"]} == {"Account", "IP"}
    table = ARTIFACT[name].options["table"]
    assert document["requiredDataConnectors"][0]["dataTypes"] == [table]
    runs_like_the_tested_query(name, document["query"].rstrip("\n"), tested, token_rule, tmp_path)


def test_sentinel_file_names_are_unique(generated, all_rules) -> None:
    """The Azure-Sentinel repository's validation finds a detection by its file name alone
    (Directory.GetFiles(..., name, AllDirectories).Single()): no two may share one."""
    names = [
        path.name
        for path in generated
        if path.is_relative_to(QUERIES_DIR) and path.relative_to(QUERIES_DIR).parts[0] in SENTINEL
    ]
    # the content-repository YAML and the ARM template, for each query of the artifact's
    # target (every rule's, and each correlation's the table expresses)
    queries = [
        path
        for name in SENTINEL
        for variant in variants_of(name)
        for path in generated
        if path.parent == QUERIES_DIR / ARTIFACT[name].target / "+".join(variant)
    ]
    assert len(names) == 2 * len(queries) > 2 * len(SENTINEL) * len(all_rules)
    assert len(set(names)) == len(names)


# ScheduledAlertRuleProperties' required properties (Azure/azure-rest-api-specs
# specification/securityinsights/resource-manager/Microsoft.SecurityInsights/stable/
# 2025-09-01/AlertRules.json)
ARM_REQUIRED = {
    "displayName",
    "enabled",
    "severity",
    "query",
    "queryFrequency",
    "queryPeriod",
    "triggerOperator",
    "triggerThreshold",
    "suppressionEnabled",
    "suppressionDuration",
}


@pytest.mark.parametrize("name", SENTINEL)
def test_sentinel_arm_template(name, generated, query_for, token_rule, all_rules, tmp_path) -> None:
    """An ARM template as the portal exports and imports it: a deployment template with a
    workspace parameter and one Sentinel scheduled rule, whose query is exactly the tested
    query plus the YAML's entity columns, and still runs like it on duckdb-kql."""
    (variant,) = variants_of(name)
    columns = ARTIFACT[name].options["entity_columns"]
    for rule in all_rules:  # each rule's template: its own rule id, title and query
        stem = rule_stem(rule)
        (resource,) = json.loads(sentinel_file(name, generated, "json", stem))["resources"]
        rule_id = yaml.safe_load(sentinel_file(name, generated, "yaml", stem))["id"]
        assert resource["name"].endswith(f"'/Microsoft.SecurityInsights/{rule_id}')]")
        assert resource["properties"]["displayName"] == rule.title
        tested = query_for(ARTIFACT[name].target, variant, stem)
        assert resource["properties"]["query"] == tested + "\n" + columns
    template = json.loads(sentinel_file(name, generated, "json"))
    document = yaml.safe_load(sentinel_file(name, generated, "yaml"))
    assert template["$schema"] == (
        "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
    )
    assert template["contentVersion"] == "1.0.0.0"
    assert template["parameters"] == {"workspace": {"type": "String"}}
    (resource,) = template["resources"]
    assert resource["type"] == "Microsoft.OperationalInsights/workspaces/providers/alertRules"
    assert resource["kind"] == "Scheduled"
    assert resource["apiVersion"] == "2025-09-01"
    rule_id = document["id"]
    assert resource["name"] == (
        f"[concat(parameters('workspace'),'/Microsoft.SecurityInsights/{rule_id}')]"
    )
    assert resource["id"].endswith(f"'/alertRules/{rule_id}')]")
    properties = resource["properties"]
    assert set(properties) >= ARM_REQUIRED
    tested = query_for(ARTIFACT[name].target, variant)
    assert properties["query"] == tested + "\n" + ARTIFACT[name].options["entity_columns"]
    assert properties["query"] == document["query"].rstrip("\n")
    assert (properties["displayName"], properties["severity"]) == (token_rule.title, "Medium")
    assert (properties["queryFrequency"], properties["queryPeriod"]) == ("PT5M", "PT6M")
    assert (properties["triggerOperator"], properties["triggerThreshold"]) == ("GreaterThan", 0)
    assert properties["enabled"] is False
    assert properties["tactics"] == ["CredentialAccess"]
    assert properties["techniques"] == ["T1528", "T1552"]  # the API takes no sub-techniques
    assert properties["entityMappings"] == document["entityMappings"]
    runs_like_the_tested_query(name, properties["query"], tested, token_rule, tmp_path)


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("[concat('a')]", "[[concat('a')]"),  # would be evaluated: escaped
        ("[x] | take 1", "[x] | take 1"),  # does not end with ]: already a literal
        ("T | where a in ('[x]')", "T | where a in ('[x]')"),
        ({"q": ["[y]"]}, {"q": ["[[y]"]}),
    ],
)
def test_arm_strings_are_literals(value, literal) -> None:
    assert arm_literals(value) == literal


def test_rule_card_shows_every_target_and_its_evidence(
    generated, query_for, token_rule, all_rules, correlation_rules
) -> None:
    cards = [path for path in generated if path.parent == QUERIES_DIR / "cards"]
    every = [*all_rules, *correlation_rules]
    assert sorted(cards) == sorted(QUERIES_DIR / "cards" / f"{rule_stem(r)}.md" for r in every)
    for rule in all_rules:
        card = generated[QUERIES_DIR / "cards" / f"{rule_stem(rule)}.md"]
        assert card.startswith(f"# {rule.title}\n")
        for target in TARGETS_BY_NAME.values():
            assert query_for(target.name, stem=rule_stem(rule)) in card
    card = generated[QUERIES_DIR / "cards" / f"{RULE_STEM}.md"]
    assert card.startswith(f"# {token_rule.title}\n")
    for target in TARGETS_BY_NAME.values():
        assert f"### {target.name}: {target.platform}" in card
        assert f"Verified by: {target.verified_by}." in card
        assert (f"**Unverified**: {target.unverified}." in card) == bool(target.unverified)
        assert query_for(target.name) in card
    assert "- T1528 Steal Application Access Token\n- T1552.007 Container API\n" in card
    labelled = len(load_cases()) + len(load_env_cases())
    assert f"run over {labelled} labelled audit events" in card


LOKI = [("loki-ruler", v) for v in variants_of("loki-ruler")]


@pytest.mark.parametrize(("name", "variant"), LOKI, ids=["+".join(v) or "rule" for _, v in LOKI])
def test_loki_ruler_group(name, variant, generated, query_for, token_rule, all_rules) -> None:
    """One group, one alerting rule per Sigma rule, each on that rule's tested query."""
    from test_logql import parse

    document = yaml.safe_load(generated[QUERIES_DIR / name / "+".join(variant) / "rules.yaml"])
    (group,) = document["groups"]
    alerts = {alert["annotations"]["sigma_id"]: alert for alert in group["rules"]}
    plain = [
        a for a in group["rules"] if a["annotations"]["sigma_id"] in {str(r.id) for r in all_rules}
    ]
    assert len(alerts) == len(group["rules"]) and len(plain) == len(all_rules)
    for rule in all_rules:
        alert = alerts[str(rule.id)]
        assert (alert["alert"], alert["annotations"]["summary"]) == (rule.name, rule.title)
        query = query_for("loki", variant, rule_stem(rule))
        assert alert["expr"] == f"sum(count_over_time({query} [6m])) > 0"
    alert = alerts[str(token_rule.id)]
    assert alert["alert"] == token_rule.name
    assert alert["expr"] == f"sum(count_over_time({query_for('loki', variant)} [6m])) > 0"
    assert alert["labels"]["severity"] == "medium"
    # Grafana's grammar reads every metric query
    assert parse([a["expr"] for a in group["rules"]]) == ["ok"] * len(group["rules"])


OPENSEARCH = [("opensearch-monitors", v) for v in variants_of("opensearch-monitors")]


@pytest.mark.parametrize(
    ("name", "variant"), OPENSEARCH, ids=["+".join(v) or "rule" for _, v in OPENSEARCH]
)
def test_opensearch_monitor(name, variant, generated, query_for, token_rule, all_rules) -> None:
    for rule in all_rules:
        path = QUERIES_DIR / name / "+".join(variant) / f"{rule_stem(rule)}.json"
        monitor = json.loads(generated[path])
        assert monitor["name"] == rule.title
        query = monitor["inputs"][0]["search"]["query"]["query"]["bool"]["filter"][0]
        assert query["query_string"]["query"] == query_for("opensearch", variant, rule_stem(rule))
    monitor = json.loads(generated[QUERIES_DIR / name / "+".join(variant) / f"{RULE_STEM}.json"])
    assert monitor["monitor_type"] == "query_level_monitor" and monitor["name"] == token_rule.title
    (search,) = monitor["inputs"]
    assert search["search"]["indices"] == ["kubernetes-audit-*"]
    query_string, window = search["search"]["query"]["query"]["bool"]["filter"]
    assert query_string["query_string"]["query"] == query_for("opensearch", variant)
    assert window["range"]["stageTimestamp"]["gte"] == "now-6m"


# ---------------------------------------------------------------------------------------------
# The correlation rules' artifacts

CORRELATION_STEMS = {
    "correlation_credential_access_kubernetes_serviceaccount_token_minted_then_used",
    "correlation_credential_access_kubernetes_serviceaccount_token_minting_burst",
    "correlation_credential_access_kubernetes_serviceaccount_token_probe_then_mint",
    "correlation_lateral_movement_kubernetes_pod_token_used_from_another_place",
}


@pytest.fixture(scope="module")
def correlations_by_stem(correlation_rules):
    from k8s_audit_detect.rules import rule_stem

    return {rule_stem(rule): rule for rule in correlation_rules}


KIBANA_CORRELATIONS = [(n, v) for n, v in KIBANA_ALL if ARTIFACT[n].options["type"] != "query"]


@pytest.mark.parametrize(
    ("name", "variant"),
    KIBANA_CORRELATIONS,
    ids=[f"{n}-{'+'.join(v) or 'rule'}" for n, v in KIBANA_CORRELATIONS],
)
def test_kibana_correlation_rules(
    name, variant, generated, query_for, correlations_by_stem
) -> None:
    """An ES|QL or EQL rule per correlation the target expresses (the index in the ES|QL
    query's FROM, in `index` for EQL), reading the correlation's timespan each run."""
    folder = QUERIES_DIR / name / "+".join(variant)
    found = {path.stem: text for path, text in generated.items() if path.parent == folder}
    target = ARTIFACT[name].target
    expected = {
        s
        for s in CORRELATION_STEMS
        if (QUERIES_DIR / target / "+".join(variant) / f"{s}.{TARGETS_BY_NAME[target].extension}")
        in generated
    }
    assert set(found) == expected and expected
    for stem, text in found.items():
        rule = json.loads(text)
        correlation = correlations_by_stem[stem]
        assert rule["query"] == query_for(target, variant, stem)
        assert (rule["type"], rule["language"]) == (ARTIFACT[name].options["type"],) * 2
        assert ("index" in rule) == (rule["type"] == "eql")
        minutes = -(-correlation.timespan.seconds // 60) + 5
        assert (rule["from"], rule["interval"]) == (f"now-{minutes}m", "5m")
        assert rule["name"] == correlation.title
        assert rule["note"] == triage_guide(correlation)


def test_splunk_correlation_searches(generated, query_for, correlations_by_stem) -> None:
    """Each correlation a saved search over its timespan, alerting once per group and
    timespan, with its own tuning macro."""
    folder = QUERIES_DIR / "splunk-app" / "k8s_token_detect"
    searches = TABConfigParser()
    searches.read_string(generated[folder / "default/savedsearches.conf"])
    macros = TABConfigParser()
    macros.read_string(generated[folder / "default/macros.conf"])
    for stem, rule in correlations_by_stem.items():
        search = searches[rule.title]
        # the search spans lines: each but the last ends in .conf's continuation backslash
        assert search["search"].replace("\\\n", "\n") == query_for("splunk", (), stem)
        minutes = -(-rule.timespan.seconds // 60)
        assert search["dispatch.earliest_time"] == f"-{minutes + 5}m@m"
        assert search["alert.suppress"] == "1"
        assert search["alert.suppress.fields"] == ",".join(rule.group_by)
        assert search["alert.suppress.period"] == f"{minutes}m"
        assert macros[f"{rule.name}_filter"]["definition"] == "search *"


@pytest.mark.parametrize("name", SENTINEL)
def test_sentinel_correlation_rules(name, generated, query_for, correlations_by_stem) -> None:
    """A scheduled rule per correlation the table expresses: the tested query (plus the
    Account column where the group is a user), over the timespan and the interval."""
    (variant,) = variants_of(name)
    table = ARTIFACT[name].options["table"].lower()
    target = ARTIFACT[name].target
    for stem, rule in correlations_by_stem.items():
        path = QUERIES_DIR / name / "+".join(variant) / f"{stem}_{table}.yaml"
        tested = QUERIES_DIR / target / "+".join(variant) / f"{stem}.kql"
        assert (path in generated) == (tested in generated)
        if tested not in generated:
            continue
        document = yaml.safe_load(generated[path])
        query = query_for(target, variant, stem)
        if "user.username" in rule.group_by:
            account = ARTIFACT[name].options["correlation_account_column"]
            assert document["query"] == query + "\n" + account + "\n"
            assert [m["entityType"] for m in document["entityMappings"]] == ["Account"]
        else:
            assert document["query"] == query + "\n"
            assert "entityMappings" not in document
        minutes = -(-rule.timespan.seconds // 60) + 5
        assert (document["queryFrequency"], document["queryPeriod"]) == ("5m", f"{minutes}m")


def test_loki_ruler_alerts_on_the_correlation_metric_query(generated, query_for) -> None:
    from test_logql import parse

    document = yaml.safe_load(generated[QUERIES_DIR / "loki-ruler" / "rules.yaml"])
    alerts = {alert["alert"]: alert for alert in document["groups"][0]["rules"]}
    burst = alerts["kubernetes_serviceaccount_token_minting_burst"]
    stem = "correlation_credential_access_kubernetes_serviceaccount_token_minting_burst"
    assert burst["expr"] == query_for("loki", (), stem)
    assert parse([burst["expr"]]) == ["ok"]


def test_correlation_rule_cards(generated, query_for, correlation_rules) -> None:
    """A correlation's card: its correlation and base rules, each expressing target's query
    with what ran it, each other target under Not available on with why, and only the
    environment filters that name one of its base rules."""
    from convert import TARGETS
    from k8s_audit_detect import correlations

    for rule in correlation_rules:
        stem = rule_stem(rule)
        card = generated[QUERIES_DIR / "cards" / f"{stem}.md"]
        assert card.startswith(f"# {rule.title}\n") and "## Correlation\n" in card
        for base in correlations.base_rules(rule):
            assert f"- `{base.name}`: {base.title}" in card
        for target in TARGETS:
            why = correlations.limit(dict(target.correlation_limits), rule)
            if why is None:
                assert f"Verified by: {target.correlation_verified_by}." in card
                assert query_for(target.name, stem=stem) in card
            else:
                assert f"- {target.name}: correlation {why}" in card
        stolen = "pod_token_used_from_another_place" in stem
        assert ("| `eks` |" in card) != stolen  # the environments' filters name no base rule
