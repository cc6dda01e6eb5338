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


KIBANA = [(n, v) for n in ARTIFACT if n.startswith("kibana-") for v in variants_of(n)]


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
    variants = sum(len(variants_of(n)) for n in ARTIFACT if n.startswith("kibana-"))
    assert len(ids) == variants * len(all_rules)
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
def test_splunk_app(name, variant, generated, query_for, token_rule, all_rules) -> None:
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
    # one search and one tuning macro per rule
    assert sorted(searches.sections()) == sorted(rule.title for rule in all_rules)
    assert sorted(macros.sections()) == sorted(
        ["kube_audit", *(f"{rule.name}_filter" for rule in all_rules)]
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
    # per rule, the content-repository YAML and the ARM template
    assert len(names) == 2 * len(SENTINEL) * len(all_rules)
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
    generated, query_for, token_rule, all_rules
) -> None:
    cards = [path for path in generated if path.parent == QUERIES_DIR / "cards"]
    assert sorted(cards) == sorted(QUERIES_DIR / "cards" / f"{rule_stem(r)}.md" for r in all_rules)
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
    assert len(alerts) == len(group["rules"]) == len(all_rules)
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
    assert parse([a["expr"] for a in group["rules"]]) == ["ok"] * len(all_rules)


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
