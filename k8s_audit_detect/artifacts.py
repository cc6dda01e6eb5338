"""Deployable artifacts built from a rule's own metadata and a target's converted query.

Each builder takes the rules with their queries for one target and environment variant, and
options (the artifact's own, plus "name": the artifact's name and "variant": the environments
whose filters this variant adds, () for the rule alone and for a target tied to one platform),
and returns {file path relative to the artifact's folder: content}. Nothing here repeats a
rule's description, level or ATT&CK ids: they are read from the rule each time; only the
ATT&CK names for the ids, which Sigma rules do not carry, come from attack.json, generated
from maintained packages by scripts/attack_names.py.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k8s_audit_detect import UserError, paths, rules

if TYPE_CHECKING:
    from sigma.rule import SigmaRule

Converted = Sequence[tuple["SigmaRule", str]]
Builder = Callable[[Converted, dict[str, Any]], dict[str, str]]

ATTACK_NAMES = Path(__file__).resolve().parent / "attack.json"
# Sigma level -> Elastic severity and risk score (Elastic's own convention), Splunk alert
# severity (1 debug ... 6 fatal), Sentinel severity.
LEVELS = {
    "informational": ("low", 21, 2, "Informational"),
    "low": ("low", 21, 2, "Low"),
    "medium": ("medium", 47, 3, "Medium"),
    "high": ("high", 73, 4, "High"),
    "critical": ("critical", 99, 5, "High"),
}
SCHEDULE = {"interval_minutes": 5, "lookback_minutes": 6}


def is_correlation(rule: Any) -> bool:
    return hasattr(rule, "timespan")


def lookback_minutes(rule: Any) -> int:
    """How far back a scheduled run reads: a minute more than the interval for a plain rule;
    a correlation's timespan and the interval, so a run sees every window ending since the
    last one."""
    if is_correlation(rule):
        return -(-rule.timespan.seconds // 60) + SCHEDULE["interval_minutes"]
    return SCHEDULE["lookback_minutes"]


def triage_guide(rule: SigmaRule) -> str:
    path = paths.TRIAGE_DIR / f"{Path(rule.source.path).stem}.md"
    if not path.is_file():
        where = path.relative_to(paths.ROOT)
        raise UserError(f"{where} is missing: every rule needs a triage guide")
    return path.read_text(encoding="utf-8")


@functools.cache
def attack_names() -> dict[str, Any]:
    """MITRE ATT&CK Enterprise names: tactics by short name, techniques by id."""
    return json.loads(ATTACK_NAMES.read_text(encoding="utf-8"))


def technique_name(technique: str) -> str:
    """A technique's name; its id where the generated names lack it (a newer technique
    than the installed data: rerun scripts/attack_names.py after upgrading)."""
    return attack_names()["techniques"].get(technique, technique)


def attack(rule: SigmaRule) -> tuple[list[tuple[str, str]], list[str]]:
    """The rule's ATT&CK tactics as (id, name) and technique ids, from its tags. Group and
    software tags (attack.g0001, attack.s0001) name neither."""
    tactics, techniques = [], []
    for tag in rule.tags:
        if tag.namespace != "attack" or re.fullmatch(r"[gsc]\d{4}", tag.name.lower()):
            continue
        if re.fullmatch(r"t\d{4}(\.\d{3})?", tag.name.lower()):
            techniques.append(tag.name.upper())
            continue
        tactic = attack_names()["tactics"].get(tag.name.lower().replace("_", "-"))
        if tactic is None:
            where = rules.relative(rule.source, paths.ROOT)
            raise UserError(
                f"{where}: tag attack.{tag.name} is neither an ATT&CK technique id nor an "
                f"Enterprise tactic ({', '.join(attack_names()['tactics'])}); fix the tag"
            )
        tactics.append((tactic["id"], tactic["name"]))
    return tactics, techniques


def level(rule: SigmaRule) -> tuple[str, int, int, str]:
    return LEVELS[rule.level.name.lower() if rule.level else "medium"]


def artifact_id(rule: SigmaRule, name: str, variant: Sequence[str] = ()) -> str:
    """A stable id per rule, artifact and variant: UUIDv5 of the Sigma id and the artifact's
    name, plus "/<env>[+<env>...]" for an environment's variant (the rule alone, and a
    platform-tied target, keep the id they always had: a deployed copy is updated in place)."""
    return str(uuid.uuid5(rule.id, "/".join([name, "+".join(variant)]) if variant else name))


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# Elastic: Kibana detection rules, NDJSON for the import API


def kibana_rules(converted: Converted, options: dict[str, Any]) -> dict[str, str]:
    """Kibana detection rules of the artifact's type: `query` (Lucene) rules for the plain
    rules; `esql` and `eql` rules for the correlations only (the Lucene rules cover the plain
    rules already)."""
    files = {}
    correlations_only = options["type"] != "query"
    for rule, query in converted:
        if is_correlation(rule) != correlations_only:
            continue
        tactics, techniques = attack(rule)
        severity, risk_score, _, _ = level(rule)
        threat = [
            {
                "framework": "MITRE ATT&CK",
                "tactic": {
                    "id": tactic_id,
                    "name": tactic_name,
                    "reference": f"https://attack.mitre.org/tactics/{tactic_id}/",
                },
                "technique": _kibana_techniques(techniques),
            }
            for tactic_id, tactic_name in tactics
        ]
        document = {
            "rule_id": artifact_id(rule, options["name"], options["variant"]),
            "name": rule.title,
            "description": one_line(rule.description or ""),
            "type": options["type"],
            "language": options["language"],
            "query": query,
            "severity": severity,
            "risk_score": risk_score,
            "from": f"now-{lookback_minutes(rule)}m",
            "interval": f"{SCHEDULE['interval_minutes']}m",
            "enabled": False,
            "false_positives": list(rule.falsepositives),
            "references": list(rule.references),
            "author": [rule.author] if rule.author else [],
            "license": "Apache License 2.0",
            "tags": [
                "Domain: Kubernetes",
                "Data Source: Kubernetes",
                "Use Case: Threat Detection",
                *(f"Tactic: {name}" for _, name in tactics),
            ],
            "threat": threat,
            "note": triage_guide(rule),
            "max_signals": 100,
            **({"index": list(options["index"])} if options.get("index") else {}),
            # Not bumped on change: Kibana imports a custom rule whose rule_id exists by
            # replacing it (overwrite) or refusing it (no overwrite); a version matters there
            # only for Elastic's prebuilt rules (elastic/kibana x-pack/solutions/security/
            # plugins/security_solution/docs/testing/test_plans/detection_response/
            # prebuilt_rules/importing.md). Elastic's own bump-on-change needs a committed lock
            # (elastic/detection-rules detection_rules/version_lock.py: +1 when the sha256 of
            # the rule's contents changes), which a byte-stable generator does not keep.
            "version": 1,
        }
        if options.get("suppress_by"):
            # Kibana query rules (8.8+) suppress alerts that share these field values within
            # the duration: one alert per audited request where a platform logs it twice.
            document["alert_suppression"] = {
                "group_by": [options["suppress_by"]],
                "duration": {"value": SCHEDULE["lookback_minutes"], "unit": "m"},
                "missing_fields_strategy": "doNotSuppress",
            }
        files[f"{Path(rule.source.path).stem}.ndjson"] = json.dumps(document, sort_keys=True)
    return files


def _kibana_techniques(techniques: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for parent in sorted({t.split(".")[0] for t in techniques}):
        subs = sorted(t for t in techniques if t.startswith(parent + "."))
        out.append(
            {
                "id": parent,
                "name": technique_name(parent),
                "reference": f"https://attack.mitre.org/techniques/{parent}/",
                "subtechnique": [
                    {
                        "id": sub,
                        "name": technique_name(sub),
                        "reference": "https://attack.mitre.org/techniques/"
                        + sub.replace(".", "/")
                        + "/",
                    }
                    for sub in subs
                ],
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Splunk: an app, in the layout of Splunk's own detection content


def splunk_app(converted: Converted, options: dict[str, Any]) -> dict[str, str]:
    app = options["app"]
    searches, macros = [], [_conf_stanza(options["input_macro"], options["input_macro_conf"])]
    titles: dict[str, SigmaRule] = {}
    for rule, query in converted:
        where = _source(rule)
        if rule.title in titles:  # Splunk keeps one of two same-named stanzas, silently
            raise UserError(
                f"{where}: title '{rule.title}' is also the title of "
                f"{_source(titles[rule.title])}, and a savedsearches.conf stanza "
                "is named by it (Splunk would keep only one); give each rule its own title"
            )
        titles[rule.title] = rule
        if not _conf_safe(rule.title):
            raise UserError(
                f"{where}: title {rule.title!r} has a control character or line break, which a "
                ".conf stanza name cannot hold; write the title on one plain line"
            )
        _, _, splunk_severity, _ = level(rule)
        tactics, techniques = attack(rule)
        searches.append(
            _conf_stanza(
                rule.title,
                {
                    "description": one_line(rule.description or ""),
                    "search": query,
                    "enableSched": "1",
                    "cron_schedule": f"*/{SCHEDULE['interval_minutes']} * * * *",
                    "dispatch.earliest_time": f"-{lookback_minutes(rule)}m@m",
                    "dispatch.latest_time": "now",
                    "counttype": "number of events",
                    "relation": "greater than",
                    "quantity": "0",
                    "alert.track": "1",
                    "alert.severity": str(splunk_severity),
                    **_splunk_suppression(rule),
                    "action.correlationsearch.annotations": json.dumps(
                        {"mitre_attack": techniques, "tactics": [n for _, n in tactics]}
                    ),
                },
            )
        )
        macros.append(
            _conf_stanza(
                f"{rule.name or Path(rule.source.path).stem}_filter",
                {
                    "definition": "search *",
                    "description": f"Local tuning for '{rule.title}': update to exclude "
                    "known automation (the default excludes nothing).",
                },
            )
        )
    version = options["version"]
    app_conf = "\n".join(
        [
            _conf_stanza("install", {"is_configured": "0"}),
            _conf_stanza("ui", {"is_visible": "false", "label": options["title"]}),
            _conf_stanza(
                "launcher",
                {
                    "author": options["author"],
                    "description": options["description"],
                    "version": version,
                },
            ),
            _conf_stanza("package", {"id": app, "check_for_updates": "false"}),
            # AppInspect (check_for_valid_package_id): the [id] name is required for
            # installation on Splunk Cloud, and must equal [package] id and app.manifest's id.
            _conf_stanza("id", {"name": app, "version": version}),
        ]
    )
    return {
        f"{app}/app.manifest": _app_manifest(app, version, options),
        f"{app}/default/app.conf": app_conf,
        f"{app}/default/savedsearches.conf": "\n".join(searches),
        f"{app}/default/macros.conf": "\n".join(macros),
        f"{app}/metadata/default.meta": "\n".join(
            [
                # The global stanza: everyone reads, only admins write (AppInspect's
                # check_meta_default_write_access fails an app without it, or with write : [ * ]);
                # the same access as Splunk's own content app (splunk/contentctl
                # contentctl/templates/app_template/metadata/default.meta).
                "## Application-level permissions\n"
                + _conf_stanza("", {"access": "read : [ * ], write : [ admin, sc_admin ]"}),
                *(_conf_stanza(kind, {"export": "system"}) for kind in ("savedsearches", "macros")),
            ]
        ),
    }


def _splunk_suppression(rule: Any) -> dict[str, str]:
    """A correlation's group alerts once per timespan (each run reads the whole timespan)."""
    if not is_correlation(rule):
        return {"alert.suppress": "0"}
    return {
        "alert.suppress": "1",
        "alert.suppress.fields": ",".join(rule.group_by),
        "alert.suppress.period": f"{-(-rule.timespan.seconds // 60)}m",
    }


def _app_manifest(app: str, version: str, options: dict[str, Any]) -> str:
    """app.manifest, schema 2.0.0, as Splunk's add-on generator writes it (splunk/
    addonfactory-ucc-generator .../init_template/.../package/app.manifest): saved searches
    and macros only, so the app belongs on search heads."""
    manifest = {
        "schemaVersion": "2.0.0",
        "info": {
            "title": options["title"],
            "id": {"group": None, "name": app, "version": version},
            "author": [{"name": options["author"], "email": None, "company": None}],
            "releaseDate": None,
            "description": options["description"],
            "classification": {
                "intendedAudience": "Security Professionals",
                "categories": ["Security, Fraud & Compliance"],
                "developmentStatus": "Production/Stable",
            },
            "commonInformationModels": None,
            "license": {"name": "Apache License 2.0", "text": None, "uri": None},
            "privacyPolicy": {"name": None, "text": None, "uri": None},
            "releaseNotes": {"name": None, "text": None, "uri": None},
        },
        "dependencies": None,
        "tasks": None,
        "inputGroups": None,
        "incompatibleApps": None,
        "platformRequirements": None,
        "supportedDeployments": ["_standalone", "_distributed", "_search_head_clustering"],
        "targetWorkloads": ["_search_heads"],
    }
    return json.dumps(manifest, indent=4)


def _source(rule: SigmaRule) -> str:
    path = Path(rule.source.path).resolve()
    return str(path.relative_to(paths.ROOT)) if path.is_relative_to(paths.ROOT) else str(path)


def _conf_safe(text: str) -> bool:
    """No control character (CR, LF, tab...) or other line break, which .conf lines cannot hold."""
    return len(text.splitlines()) <= 1 and not any(unicodedata.category(c) == "Cc" for c in text)


def _conf_stanza(name: str, settings: dict[str, str]) -> str:
    if not _conf_safe(name):
        raise UserError(f"stanza name {name!r} has a control character; a .conf line cannot")
    lines = [f"[{name}]"]
    for key, value in settings.items():
        if key == "search" and "\r" not in value:
            # a correlation's search spans lines (the Splunk pipeline refuses line breaks in
            # values, so each is the query's own): .conf continues a line ending in a backslash
            value = "\\\n".join(value.split("\n"))
        elif len(value.splitlines()) > 1 or "\r" in value:
            raise UserError(f"{name}: {key} spans lines, which a .conf value cannot")
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Microsoft Sentinel: scheduled analytics rules, as the Azure-Sentinel content repository's YAML
# and as the ARM template the portal's Analytics > Import and the API take.
#
# File names carry the table: the Azure-Sentinel repository's validation finds each detection by
# its file name alone and requires exactly one (.script/tests/detectionTemplateSchemaValidation/
# DetectionTemplateSchemaValidationTests.cs: Directory.GetFiles(path, name, AllDirectories)
# .Single()), so three tables' rules cannot share one name.

# The ARM template: the shape the portal exports and imports (MicrosoftDocs/azure-docs
# articles/sentinel/import-export-analytics-rules.md; a `workspace` parameter, the resource
# Microsoft.OperationalInsights/workspaces/providers/alertRules named <workspace>/
# Microsoft.SecurityInsights/<rule id>), with the latest stable API version and its
# ScheduledAlertRuleProperties (Azure/azure-rest-api-specs specification/securityinsights/
# resource-manager/Microsoft.SecurityInsights/stable/2025-09-01/AlertRules.json: required
# displayName, enabled, severity, query, queryFrequency, queryPeriod, triggerOperator,
# triggerThreshold, suppressionEnabled, suppressionDuration; `techniques` but no sub-techniques).
ARM_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
ARM_ALERT_RULE = "Microsoft.OperationalInsights/workspaces/providers/alertRules"
ARM_API_VERSION = "2025-09-01"


def sentinel_rules(converted: Converted, options: dict[str, Any]) -> dict[str, str]:
    import yaml

    files = {}
    for rule, query in converted:
        _, _, _, severity = level(rule)
        tactics, techniques = attack(rule)
        rule_id = artifact_id(rule, options["name"])
        account = {
            "entityType": "Account",
            "fieldMappings": [{"identifier": "Name", "columnName": "AccountName"}],
        }
        ip = {
            "entityType": "IP",
            "fieldMappings": [{"identifier": "Address", "columnName": "IPAddress"}],
        }
        if not is_correlation(rule):
            deployed = query + "\n" + options["entity_columns"]
            entities = [account, ip]
        elif "user.username" in rule.group_by:  # the group's key is an account
            deployed = query + "\n" + options["correlation_account_column"]
            entities = [account]
        else:
            deployed, entities = query, []
        document = {
            "id": rule_id,
            "name": rule.title,
            "description": one_line(rule.description or ""),
            "severity": severity,
            "requiredDataConnectors": [
                {"connectorId": "AzureKubernetes", "dataTypes": [options["table"]]}
            ],
            "queryFrequency": f"{SCHEDULE['interval_minutes']}m",
            "queryPeriod": f"{lookback_minutes(rule)}m",
            "triggerOperator": "gt",
            "triggerThreshold": 0,
            "tactics": [name.replace(" ", "") for _, name in tactics],
            "relevantTechniques": techniques,
            "query": deployed + "\n",
            **({"entityMappings": entities} if entities else {}),
            "version": "1.0.0",
            "kind": "Scheduled",
        }
        stem = f"{Path(rule.source.path).stem}_{options['table'].lower()}"
        files[f"{stem}.yaml"] = yaml.dump(
            document, Dumper=_block_dumper(), sort_keys=False, width=10**6, allow_unicode=True
        )
        properties = {
            "displayName": rule.title,
            "description": one_line(rule.description or ""),
            "severity": severity,
            "enabled": False,  # like the Kibana rules and OpenSearch monitors: you enable it
            "query": deployed,
            "queryFrequency": f"PT{SCHEDULE['interval_minutes']}M",
            "queryPeriod": f"PT{lookback_minutes(rule)}M",
            "triggerOperator": "GreaterThan",
            "triggerThreshold": 0,
            "suppressionDuration": "PT5H",
            "suppressionEnabled": False,
            "tactics": document["tactics"],
            "techniques": sorted({t.split(".")[0] for t in techniques}),
            "incidentConfiguration": {
                "createIncident": True,
                "groupingConfiguration": {
                    "enabled": False,
                    "reopenClosedIncident": False,
                    "lookbackDuration": "PT5H",
                    "matchingMethod": "AllEntities",
                    "groupByEntities": [],
                    "groupByAlertDetails": [],
                    "groupByCustomDetails": [],
                },
            },
            "eventGroupingSettings": {"aggregationKind": "SingleAlert"},
            **({"entityMappings": entities} if entities else {}),
        }
        template = {
            "$schema": ARM_SCHEMA,
            "contentVersion": "1.0.0.0",
            "parameters": {"workspace": {"type": "String"}},
            "resources": [
                {
                    "id": "[concat(resourceId('Microsoft.OperationalInsights/workspaces/"
                    "providers', parameters('workspace'), 'Microsoft.SecurityInsights'),"
                    f"'/alertRules/{rule_id}')]",
                    "name": "[concat(parameters('workspace'),"
                    f"'/Microsoft.SecurityInsights/{rule_id}')]",
                    "type": ARM_ALERT_RULE,
                    "kind": "Scheduled",
                    "apiVersion": ARM_API_VERSION,
                    "properties": arm_literals(properties),
                }
            ],
        }
        files[f"{stem}.json"] = json.dumps(template, indent=2, ensure_ascii=False)
    return files


def arm_literals(value: Any) -> Any:
    """Every string as a literal: ARM evaluates a string that starts with [ and ends with ] as
    an expression unless it starts with [[ (MicrosoftDocs/azure-docs articles/
    azure-resource-manager/templates/template-expressions.md, Escape characters)."""
    if isinstance(value, str):
        return "[" + value if value.startswith("[") and value.endswith("]") else value
    if isinstance(value, list):
        return [arm_literals(v) for v in value]
    if isinstance(value, dict):
        return {k: arm_literals(v) for k, v in value.items()}
    return value


def _block_dumper() -> type:
    import yaml

    class BlockDumper(yaml.SafeDumper):
        """Multi-line strings as literal blocks (`query: |`), as Sentinel's content is written."""

    def represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    BlockDumper.add_representer(str, represent_str)
    return BlockDumper


# ---------------------------------------------------------------------------------------------
# The rule card: one Markdown page per rule


def rule_card(
    rule: SigmaRule,
    queries: Sequence[tuple[str, ...]],
    environments: Sequence[tuple[str, list[tuple[str, str, tuple[str, ...]]]]],
    evidence: str,
    unavailable: Sequence[tuple[str, str]] = (),
) -> str:
    """queries: (target, platform, verified by, unverified, query) for the rule alone or, for a
    platform-tied target, its environment; environments: (env, [(filter title, path, the
    rules it names)]), each filter shown where it names the rule (a correlation: one of its
    base rules); unavailable: (target, why) for each target that cannot express the rule."""
    named = {
        str(ref)
        for r in ([ref.rule for ref in rule.referenced_rules] if is_correlation(rule) else [rule])
        for ref in (r.id, r.name, "any")
    }
    applying = [
        (env, [(title, path) for title, path, refs in filters if named & set(refs)])
        for env, filters in environments
    ]
    applying = [(env, filters) for env, filters in applying if filters]
    tactics, techniques = attack(rule)
    stem = Path(rule.source.path).stem
    lines = [
        f"# {rule.title}",
        "",
        f"`{rule.id}` · level **{rule.level.name.lower() if rule.level else 'medium'}** · "
        f"status {rule.status.name.lower() if rule.status else 'experimental'} · "
        f"[rule](../../{rules.relative(rule.source, paths.ROOT)}) · "
        f"[triage guide](../../triage/{stem}.md)",
        "",
        one_line(rule.description or ""),
        "",
        "## ATT&CK",
        "",
        *(f"- {tid} {name}" for tid, name in tactics),
        *(f"- {t} {technique_name(t)}" for t in techniques),
        "",
        *_correlation_section(rule),
        "## Environments and their filters",
        "",
        *(
            [
                "| environment | filters |",
                "|---|---|",
                *(
                    f"| `{env}` | "
                    + "; ".join(f"[{title}](../../{path})" for title, path in filters)
                    + " |"
                    for env, filters in applying
                ),
            ]
            if applying
            else ["No environment's filter names this rule (a correlation: its base rules)."]
        ),
        "",
        "## Queries and their evidence",
        "",
        evidence,
        "",
    ]
    for target, platform, verified_by, unverified, query in queries:
        lines += [f"### {target}: {platform}", "", f"Verified by: {verified_by}.", ""]
        if unverified:
            lines += [f"**Unverified**: {unverified}.", ""]
        lines += ["```", query, "```", ""]
    if unavailable:
        lines += ["## Not available on", ""]
        lines += [f"- {target}: {why}" for target, why in unavailable]
        lines += [""]
    return "\n".join(lines)


def _correlation_section(rule: Any) -> list[str]:
    """A correlation's type, window, grouping and condition, and its base rules (which the
    environments' filters apply to when a filter names them)."""
    if not is_correlation(rule):
        return []
    condition = rule.condition
    counted = getattr(condition, "fieldref", None)
    if hasattr(condition, "op"):
        measure = f"{condition.op.name.lower()} {condition.count}"
        measure += f" distinct `{counted}`" if counted else ""
    else:
        measure = "every rule, in order" if rule.type.name == "TEMPORAL_ORDERED" else "all rules"
    lines = [
        "## Correlation",
        "",
        f"`{rule.type.name.lower()}` within {rule.timespan.spec}, by "
        + ", ".join(f"`{field}`" for field in rule.group_by)
        + f": {measure}.",
        "",
    ]
    for alias in rule.aliases:
        joined = ", ".join(f"`{field}` ({ref.reference})" for ref, field in alias.mapping.items())
        lines += [f"`{alias.alias}` is {joined}.", ""]
    lines += ["Base rules (no alerts of their own):", ""]
    for reference in rule.referenced_rules:
        base = reference.rule
        lines.append(f"- `{base.name}`: {base.title}")
    return [*lines, ""]


# ---------------------------------------------------------------------------------------------
# Grafana Loki: a ruler rule group; OpenSearch: an Alerting monitor


def loki_rules(converted: Converted, options: dict[str, Any]) -> dict[str, str]:
    """A Loki ruler rule group: alert when the LogQL query returns any line in the window."""
    import yaml

    rules = []
    for rule, query in converted:
        severity, _, _, _ = level(rule)
        window = f"{SCHEDULE['lookback_minutes']}m"
        # a correlation's query is a metric query with its condition already
        expr = query if is_correlation(rule) else f"sum(count_over_time({query} [{window}])) > 0"
        rules.append(
            {
                "alert": rule.name or Path(rule.source.path).stem,
                "expr": expr,
                "for": "0m",
                "labels": {"severity": severity},
                "annotations": {
                    "summary": rule.title,
                    "description": one_line(rule.description or ""),
                    "sigma_id": str(rule.id),
                },
            }
        )
    document = {"groups": [{"name": options["group"], "interval": "5m", "rules": rules}]}
    text = yaml.dump(document, Dumper=_block_dumper(), sort_keys=False, width=10**6)
    return {"rules.yaml": text}


def opensearch_monitors(converted: Converted, options: dict[str, Any]) -> dict[str, str]:
    """OpenSearch Alerting query-level monitors (POST _plugins/_alerting/monitors), the
    Lucene query in a query_string, over the index pattern the site ships audit logs to,
    windowed on options["time_field"]."""
    files = {}
    for rule, query in converted:
        _, _, splunk_severity, _ = level(rule)
        monitor = {
            "type": "monitor",
            "monitor_type": "query_level_monitor",
            "name": rule.title,
            "enabled": False,
            "schedule": {"period": {"interval": SCHEDULE["interval_minutes"], "unit": "MINUTES"}},
            "inputs": [
                {
                    "search": {
                        "indices": list(options["indices"]),
                        "query": {
                            "size": 0,
                            "query": {
                                "bool": {
                                    "filter": [
                                        {"query_string": {"query": query}},
                                        {
                                            "range": {
                                                options["time_field"]: {
                                                    "gte": f"now-{SCHEDULE['lookback_minutes']}m"
                                                }
                                            }
                                        },
                                    ]
                                }
                            },
                        },
                    }
                }
            ],
            "triggers": [
                {
                    "name": f"{rule.title}: any event",
                    "severity": str(splunk_severity),
                    "condition": {
                        "script": {
                            "source": "ctx.results[0].hits.total.value > 0",
                            "lang": "painless",
                        }
                    },
                    "actions": [],
                }
            ],
        }
        files[f"{Path(rule.source.path).stem}.json"] = json.dumps(monitor, indent=2)
    return files
