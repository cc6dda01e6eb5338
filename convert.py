#!/usr/bin/env python3
"""Convert the Sigma rules under sigma/rules/ into every target's query, and replay audit logs.

    python convert.py                    write queries/<target>/<rule>.<ext> for every target
    python convert.py --check            compare with the committed queries/, exit 1 on a diff
    python convert.py -t splunk --stdout print one target's queries
    python convert.py --list             the targets: platform, data source, verifying engine
    python convert.py replay FILE...     run the rules over Kubernetes audit log files (DuckDB)

Adding a SIEM is a pipeline file under pipelines/ plus one row in TARGETS.
Exit codes: 0 done, 1 --check found differences, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import functools
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dac import UserError, artifacts, rules
from dac.rules import rule_stem, sigma_rules

if TYPE_CHECKING:  # pySigma is imported where it is used: --help and --list stay instant
    from sigma.collection import SigmaCollection
    from sigma.conversion.base import Backend
    from sigma.processing.pipeline import ProcessingPipeline
    from sigma.rule import SigmaRule
    from sigma.types import SigmaString

ROOT = Path(__file__).resolve().parent
RULES_DIR = ROOT / "sigma" / "rules"
FILTERS_DIR = ROOT / "sigma" / "filters"
PIPELINES_DIR = ROOT / "pipelines"
QUERIES_DIR = ROOT / "queries"


@dataclass(frozen=True)
class Target:
    """One output: a pySigma backend (as `sigma convert -t` names it) and our pipelines,
    composed in order as `sigma convert -p A -p B` composes them."""

    name: str
    backend: str
    pipelines: tuple[str, ...]
    extension: str
    platform: str
    data_source: str
    verified_by: str
    # The vendor's own definition the field mapping follows (repository and path, or page);
    # what no vendor source confirms is said in `unverified`.
    source: str
    unverified: str = ""
    backend_options: tuple[tuple[str, str], ...] = ()  # as `sigma convert -O key=value`
    # A data source that only one platform has (AKSAudit: AKS) is converted for that
    # platform's environment only; None: the rule as it is, and once per environment.
    environments: tuple[str, ...] | None = None

    def variants(self, requested: Sequence[str] = ()) -> list[tuple[str, ...]]:
        """The environment sets to convert for: the requested set if it fits this target,
        else the rule alone and each environment (or only this target's environments)."""
        if requested:
            fits = self.environments is None or set(requested) <= set(self.environments)
            return [tuple(requested)] if fits else []
        if self.environments is not None:
            return [(env,) for env in self.environments]
        return [(), *((env,) for env in environments())]


GKE_UNVERIFIED = (
    "whether GKE logs TokenRequest at all: Elastic ships a rule on its method name, Panther "
    "states GKE does not log it, and no real GKE record of it is public"
)
SUMO_UNVERIFIED = (
    "whether = and in compare case-sensitively (Sumo documents it for like and matches only)"
)
TARGETS: tuple[Target, ...] = (
    Target(
        name="elastic-lucene",
        backend="lucene",
        pipelines=("elastic_kubernetes.yml", "lucene_exact_values.yml"),
        extension="lucene",
        platform="Elastic (Kibana query, Lucene)",
        data_source="logs-kubernetes.audit_logs-* (Kubernetes integration: audit log file, EKS "
        "CloudWatch and AKS Event Hub inputs; not its GKE Pub/Sub input)",
        verified_by="Apache Lucene QueryParser + MemoryIndex (Elasticsearch query_string rules)",
        source="elastic/integrations packages/kubernetes/data_stream/audit_logs/ "
        "(fields/fields.yml, manifest.yml, elasticsearch/ingest_pipeline/default.yml)",
    ),
    Target(
        name="elastic-eql",
        backend="eql",
        pipelines=("elastic_kubernetes.yml", "elastic_eql_case_sensitive.yml"),
        extension="eql",
        platform="Elastic Security (EQL rule / Timeline)",
        data_source="logs-kubernetes.audit_logs-* (Kubernetes integration: audit log file, EKS "
        "CloudWatch and AKS Event Hub inputs; not its GKE Pub/Sub input)",
        verified_by="Elastic eql engine (PythonEngine)",
        source="elastic/integrations packages/kubernetes/data_stream/audit_logs/ "
        "(fields/fields.yml, manifest.yml, elasticsearch/ingest_pipeline/default.yml)",
    ),
    Target(
        name="elastic-esql",
        backend="esql",
        pipelines=("elastic_kubernetes.yml", "elastic_esql_strings.yml"),
        extension="esql",
        platform="Elastic (ES|QL)",
        data_source="logs-kubernetes.audit_logs-* (Kubernetes integration: audit log file, EKS "
        "CloudWatch and AKS Event Hub inputs; not its GKE Pub/Sub input)",
        verified_by="expected string only (no ES|QL engine here)",
        source="elastic/integrations packages/kubernetes/data_stream/audit_logs/ "
        "(fields/fields.yml, manifest.yml, elasticsearch/ingest_pipeline/default.yml)",
    ),
    Target(
        name="elastic-gke-lucene",
        backend="lucene",
        pipelines=("elastic_gcp_gke_audit.yml", "lucene_exact_values.yml"),
        extension="lucene",
        platform="Elastic (Kibana query, Lucene), GKE",
        data_source="logs-gcp.audit-* (GCP integration, GKE Cloud Audit Logs)",
        verified_by="Apache Lucene QueryParser + MemoryIndex (query_string rules)",
        source="elastic/integrations packages/gcp/data_stream/audit/ (fields/fields.yml, "
        "elasticsearch/ingest_pipeline/default.yml); GKE method names as in "
        "elastic/detection-rules rules/integrations/gcp/",
        unverified=GKE_UNVERIFIED,
        environments=("gke",),
    ),
    Target(
        name="elastic-gke-eql",
        backend="eql",
        pipelines=("elastic_gcp_gke_audit.yml", "elastic_eql_case_sensitive.yml"),
        extension="eql",
        platform="Elastic Security (EQL), GKE",
        data_source="logs-gcp.audit-* (GCP integration, GKE Cloud Audit Logs)",
        verified_by="Elastic eql engine (PythonEngine)",
        source="elastic/integrations packages/gcp/data_stream/audit/ (fields/fields.yml, "
        "elasticsearch/ingest_pipeline/default.yml); GKE method names as in "
        "elastic/detection-rules rules/integrations/gcp/",
        unverified=GKE_UNVERIFIED,
        environments=("gke",),
    ),
    Target(
        name="elastic-gke-esql",
        backend="esql",
        pipelines=("elastic_gcp_gke_audit.yml", "elastic_esql_strings.yml"),
        extension="esql",
        platform="Elastic (ES|QL), GKE",
        data_source="logs-gcp.audit-* (GCP integration, GKE Cloud Audit Logs)",
        verified_by="expected string only (no ES|QL engine here)",
        source="elastic/integrations packages/gcp/data_stream/audit/ (fields/fields.yml, "
        "elasticsearch/ingest_pipeline/default.yml); GKE method names as in "
        "elastic/detection-rules rules/integrations/gcp/",
        unverified=GKE_UNVERIFIED,
        environments=("gke",),
    ),
    Target(
        name="elastic-aks-lucene",
        backend="lucene",
        pipelines=("elastic_azure_aks_audit.yml", "lucene_exact_values.yml"),
        extension="lucene",
        platform="Elastic (Kibana query, Lucene), AKS",
        data_source="logs-azure.platformlogs-* (Azure integration, kube-audit records)",
        verified_by="Apache Lucene QueryParser + MemoryIndex (query_string rules)",
        source="elastic/integrations packages/azure/data_stream/platformlogs/ "
        "(properties a flattened field, properties.log parsed as JSON)",
        environments=("aks",),
    ),
    Target(
        name="splunk",
        backend="splunk",
        pipelines=("splunk_kubernetes_audit.yml",),
        extension="spl",
        platform="Splunk (SPL search)",
        data_source="raw JSON audit events behind the `kube_audit` macro",
        verified_by="expected string only (no SPL engine here)",
        source="splunk/security_content data_sources/kubernetes_audit.yml (sourcetype _json, "
        "raw Event paths, arrays as name{})",
    ),
    Target(
        name="opensearch",
        backend="opensearch_lucene",
        pipelines=("opensearch_kubernetes_audit.yml", "lucene_exact_values.yml"),
        extension="lucene",
        platform="OpenSearch (Dashboards query, Lucene)",
        data_source="raw audit JSON, dynamic mapping (.keyword sub-fields)",
        verified_by="Apache Lucene QueryParser + MemoryIndex (query_string rules)",
        source="OpenSearch documentation, mappings/mapping-parameters/ignore-above (dynamic "
        "mapping: text with a keyword sub-field, ignore_above 256)",
        unverified="how the shipper lays out the event (raw JSON at the top level assumed)",
    ),
    Target(
        name="sentinel-aksaudit",
        backend="kusto",
        pipelines=(
            "kusto_values_escaped.yml",
            "microsoft_sentinel_aksaudit.yml",
            "kusto_case_sensitive.yml",
            "kusto_backend_fixes.yml",
        ),
        extension="kql",
        platform="Microsoft Sentinel / Azure Monitor Logs (KQL)",
        data_source="table AKSAudit (AKS resource-specific diagnostics)",
        verified_by="duckdb-kql (KQL on DuckDB)",
        source="MicrosoftDocs/azure-reference-other azure-monitor-ref/tables/aksaudit.md, "
        "aksauditadmin.md",
        environments=("aks",),
    ),
    Target(
        name="sentinel-aksauditadmin",
        backend="kusto",
        pipelines=(
            "kusto_values_escaped.yml",
            "microsoft_sentinel_aksaudit.yml",
            "microsoft_sentinel_table_aksauditadmin.yml",
            "kusto_case_sensitive.yml",
            "kusto_backend_fixes.yml",
        ),
        extension="kql",
        platform="Microsoft Sentinel / Azure Monitor Logs (KQL)",
        data_source="table AKSAuditAdmin (AKS audit without get/list)",
        verified_by="duckdb-kql (KQL on DuckDB)",
        source="MicrosoftDocs/azure-reference-other azure-monitor-ref/tables/aksaudit.md, "
        "aksauditadmin.md",
        environments=("aks",),
    ),
    Target(
        name="sentinel-azurediagnostics",
        backend="kusto",
        pipelines=(
            "kusto_values_escaped.yml",
            "microsoft_sentinel_azurediagnostics.yml",
            "kusto_case_sensitive.yml",
            "kusto_backend_fixes.yml",
        ),
        extension="kql",
        platform="Microsoft Sentinel / Azure Monitor Logs (KQL)",
        data_source="table AzureDiagnostics, Category kube-audit, Event in log_s (legacy)",
        verified_by="duckdb-kql (KQL on DuckDB)",
        source="MicrosoftDocs/azure-aks-docs articles/aks/monitor-aks.md (Azure diagnostics "
        "mode writes the categories kube-audit and kube-audit-admin to AzureDiagnostics)",
        unverified="the log_s column holding the Event's JSON (public detection content, no "
        "Microsoft table reference found)",
        environments=("aks",),
    ),
    Target(
        name="loki",
        backend="loki",
        pipelines=("grafana_loki_kubernetes_audit.yml",),
        extension="logql",
        platform="Grafana Loki (LogQL, Explore or an alerting rule)",
        data_source='JSON lines in the stream {job="kubernetes-audit"}',
        verified_by="Grafana's LogQL grammar (parses) + reviewed expected string",
        source="grafana/loki docs/sources/query/log_queries/_index.md (json parser: nested keys "
        "joined with _, other characters _, arrays skipped)",
    ),
    Target(
        name="logscale",
        backend="log_scale",
        pipelines=("crowdstrike_logscale_kubernetes_audit.yml",),
        extension="logscale",
        platform="CrowdStrike Falcon LogScale (search / alert)",
        data_source="raw audit JSON behind the saved search $kube_audit()",
        verified_by="expected string only (no LogScale engine here)",
        source="LogScale documentation, parsers-create-parsing-json and syntax-array (parseJson "
        "names members with . and elements with [n])",
    ),
    Target(
        name="sumologic-cse",
        backend="sumologic_cse",
        pipelines=("sumologic_cse_kubernetes.yml", "sumologic_cse_kubernetes_audit.yml"),
        extension="json",
        platform="Sumo Logic Cloud SIEM (rule import JSON)",
        data_source="records of vendor and product Kubernetes (Sumo's Kubernetes parser), the "
        "Event under message.*",
        verified_by="expected string only (no Cloud SIEM engine here)",
        source="SumoLogic/cloud-siem-content-catalog audit/parsers.json, "
        "mappings/8136de4e-b137-444a-8a31-6343962d235b.md, audit/rules.json",
        unverified=SUMO_UNVERIFIED,
        # no conversion time or git commit in the document: the output must be byte-stable
        backend_options=(("include_conversion_metadata", "false"),),
    ),
    Target(
        name="sumologic-cse-eks",
        backend="sumologic_cse",
        pipelines=("sumologic_cse_eks.yml", "sumologic_cse_kubernetes_audit.yml"),
        extension="json",
        platform="Sumo Logic Cloud SIEM (rule import JSON), EKS",
        data_source="records of cloud_provider AWS, cloud_service EKS (Sumo's AWS EKS parser), "
        "the Event under message.*",
        verified_by="expected string only (no Cloud SIEM engine here)",
        source="SumoLogic/cloud-siem-content-catalog audit/parsers.json, "
        "mappings/0b2fed6f-4039-4854-b6fe-b0035557bd54.md, audit/rules.json",
        unverified=SUMO_UNVERIFIED,
        backend_options=(("include_conversion_metadata", "false"),),
        environments=("eks",),
    ),
    Target(
        name="cloudwatch-eks",
        backend="cloudwatch_insights",
        pipelines=("aws_cloudwatch_eks_audit.yml",),
        extension="insights",
        platform="AWS CloudWatch Logs Insights (EKS)",
        data_source="log group /aws/eks/<cluster>/cluster, streams kube-apiserver-audit-*",
        verified_by="expected string only (no Logs Insights engine here)",
        source="AWS CloudWatch Logs documentation, CWL_AnalyzeLogData-discoverable-fields "
        "(JSON members discovered as fields, nested with .)",
        environments=("eks",),
    ),
    Target(
        name="spark-sql",
        backend="databricks",
        pipelines=("spark_kubernetes_audit.yml",),
        extension="sql",
        platform="Databricks / Spark SQL data lake",
        data_source="table k8s_audit: raw audit JSON, nested (spark.read.json, Auto Loader)",
        verified_by="local PySpark (Spark SQL)",
        source="kubernetes/apiserver pkg/apis/audit/v1/types.go (the raw Event; the table is "
        "this project's own, no vendor mapping)",
    ),
    Target(
        name="duckdb",
        backend="sqlite",
        pipelines=("duckdb_kubernetes_audit.yml",),
        extension="sql",
        platform="DuckDB / SQL data lake; `convert.py replay`",
        data_source="view k8s_audit: one column per audit Event path",
        verified_by="DuckDB (convert.py replay)",
        source="kubernetes/apiserver pkg/apis/audit/v1/types.go (the raw Event; the table is "
        "this project's own, no vendor mapping)",
    ),
)
TARGETS_BY_NAME = {target.name: target for target in TARGETS}
REPLAY_TARGET = TARGETS_BY_NAME["duckdb"]


@dataclass(frozen=True)
class Artifact:
    """A deployable file set built from one target's queries, in queries/<name>/[<env>/]."""

    name: str
    target: str
    build: artifacts.Builder
    options: dict[str, Any] = field(default_factory=dict)


KIBANA_LUCENE = {"type": "query", "language": "lucene"}
ARTIFACTS: tuple[Artifact, ...] = (
    Artifact(
        "kibana-kubernetes",
        "elastic-lucene",
        artifacts.kibana_rules,
        # AKS records from the Event Hub input: both audit categories, one auditID
        {
            "index": ("logs-kubernetes.audit_logs-*",),
            "suppress_by": "kubernetes.audit.auditID",
            **KIBANA_LUCENE,
        },
    ),
    Artifact(
        "kibana-gke",
        "elastic-gke-lucene",
        artifacts.kibana_rules,
        {"index": ("logs-gcp.audit-*",), **KIBANA_LUCENE},
    ),
    Artifact(
        "kibana-aks",
        "elastic-aks-lucene",
        artifacts.kibana_rules,
        {
            "index": ("logs-azure.platformlogs-*",),
            "suppress_by": "azure.platformlogs.properties.log.auditID",
            **KIBANA_LUCENE,
        },
    ),
    Artifact(
        "splunk-app",
        "splunk",
        artifacts.splunk_app,
        {
            "app": "k8s_token_detect",
            "input_macro": "kube_audit",
            "input_macro_conf": {
                "definition": "index=main sourcetype=kube:apiserver-audit",
                "description": "Where your Kubernetes audit events are: set the index and "
                "sourcetype (EKS via the AWS add-on: sourcetype=aws:cloudwatchlogs:eks)",
            },
        },
    ),
    Artifact("loki-ruler", "loki", artifacts.loki_rules, {"group": "k8s-token-detect"}),
    Artifact(
        "opensearch-monitors",
        "opensearch",
        artifacts.opensearch_monitors,
        # Every audit Event has stageTimestamp (audit.k8s.io/v1: when the request reached this
        # stage), which dynamic mapping makes a date; @timestamp exists only if the shipper
        # adds it (Fluent Bit: Logstash_Format On).
        {"indices": ("kubernetes-audit-*",), "time_field": "stageTimestamp"},
    ),
    Artifact(
        "sentinel-rules-aksaudit",
        "sentinel-aksaudit",
        artifacts.sentinel_rules,
        {
            "table": "AKSAudit",
            "entity_columns": "| extend AccountName = tostring(User.username), "
            "IPAddress = tostring(SourceIps[0])",
        },
    ),
    Artifact(
        "sentinel-rules-aksauditadmin",
        "sentinel-aksauditadmin",
        artifacts.sentinel_rules,
        {
            "table": "AKSAuditAdmin",
            "entity_columns": "| extend AccountName = tostring(User.username), "
            "IPAddress = tostring(SourceIps[0])",
        },
    ),
    Artifact(
        "sentinel-rules-azurediagnostics",
        "sentinel-azurediagnostics",
        artifacts.sentinel_rules,
        {
            "table": "AzureDiagnostics",
            "entity_columns": "| extend AccountName = tostring(event.user.username), "
            "IPAddress = tostring(event.sourceIPs[0])",
        },
    ),
)


# ---------------------------------------------------------------------------------------------
# Loading and converting


def environments() -> list[str]:
    """The environments that have filters: one folder each under sigma/filters/."""
    return rules.environments(FILTERS_DIR)


def load_rules(envs: Sequence[str] = ()) -> SigmaCollection:
    """The rules with the filters of these environments and the organisation's applied."""
    return rules.load_rules(RULES_DIR, FILTERS_DIR, envs, ROOT)


def _rel(path: object) -> str:
    return rules.relative(path, ROOT)


def convert_target(target: Target, collection: SigmaCollection) -> dict[str, str]:
    """Convert every rule for one target: {rule file stem: query}."""
    from sigma.exceptions import SigmaError, SigmaTransformationError
    from sigma.processing.pipeline import ProcessingPipeline

    backend_class = _backend_class(target.backend)  # imports plugins' YAML transformation types
    pipeline = ProcessingPipeline()
    for name in target.pipelines:
        try:  # a fresh pipeline each time (conversion keeps state in it), parsed YAML once
            pipeline += ProcessingPipeline.from_dict(copy.deepcopy(_pipeline_yaml(name)))
        except (SigmaError, ValueError) as error:
            path = _rel(PIPELINES_DIR / name)
            raise UserError(f"{path}: {error}; fix the pipeline YAML") from error
    pipelines = " + ".join(f"pipelines/{name}" for name in target.pipelines)
    with _libyaml():
        backend = backend_class(processing_pipeline=pipeline, **dict(target.backend_options))
    queries: dict[str, str] = {}
    for rule in sigma_rules(collection):
        try:
            # pySigma's pipelines change the rule they process: convert a copy
            converted = backend.convert_rule(copy.deepcopy(rule))
            output = backend.finalize(converted, backend.default_format)
        except SigmaError as error:
            refused = refused_value(pipeline, rule)
            if refused is not None:
                where, field, value, reason = refused
                raise UserError(
                    f"{_rel(where)}: target {target.name}: {field} value "
                    f"{rules.sigma_text(value)}: {reason}"
                ) from error
            message = _one_line(ValueError.__str__(error))  # pySigma's " in <file>" left out
            if not isinstance(error, SigmaTransformationError):
                message += "; fix the rule (check it with `sigma check`)"
            elif message.startswith("The following fields are not mapped"):
                message += "; map the field in the pipeline or change the rule"
            # else a pipeline's own refusal, which says why and what to do
            raise UserError(
                f"{_rel(rule.source.path)}: target {target.name} (pipeline {pipelines}): {message}"
            ) from error
        except Exception as error:  # the backend's own failure, e.g. on |cased or |exists
            raise UserError(
                f"{_rel(rule.source.path)}: target {target.name}: the {target.backend} backend "
                f"cannot convert it ({type(error).__name__}: {_one_line(error)}); remove what "
                "it names from the rule or filter (a modifier such as |cased or |exists)"
            ) from error
        queries[rule_stem(rule)] = _as_text(output)
    return queries


def _one_line(error: object) -> str:
    return " ".join(str(error).split())


def refused_value(
    pipeline: ProcessingPipeline, rule: SigmaRule
) -> tuple[object, str, SigmaString, str] | None:
    """The first value a pipeline's detection_item_failure refuses: (its file, field, value,
    the pipeline's message), found with the pipeline's own conditions; None if none does."""
    from sigma.processing.transformations import DetectionItemFailureTransformation
    from sigma.rule import SigmaDetection
    from sigma.types import SigmaString

    def items(detection: SigmaDetection) -> Iterator[Any]:
        for entry in detection.detection_items:
            yield from items(entry) if isinstance(entry, SigmaDetection) else (entry,)

    failures = [
        item
        for item in pipeline.items
        if isinstance(item.transformation, DetectionItemFailureTransformation)
    ]
    for failure in failures:
        conditions = failure.detection_item_conditions
        for detection in rule.detection.detections.values():
            for item in items(detection):
                for value in item.value:
                    if (
                        isinstance(value, SigmaString)
                        and conditions
                        and all(
                            getattr(c, "match_value", lambda _: False)(value) for c in conditions
                        )
                    ):
                        where = item.source or rule.source
                        return where, item.field, value, failure.transformation.message
    return None


@functools.cache
def _pipeline_yaml(name: str) -> dict:
    """A pipeline file's YAML, parsed once per run (libyaml's parser where it is built in)."""
    import yaml

    path = PIPELINES_DIR / name
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=rules.yaml_loader())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{_rel(path)}: {error}; fix the pipeline YAML") from error


def _as_text(output: object) -> str:
    """A backend's finalized output as sigma-cli prints it: one query a line, or a document."""
    if isinstance(output, list):
        return "\n".join(str(query) for query in output)
    if isinstance(output, str):
        return output
    return json.dumps(output, indent=2)


@contextlib.contextmanager
def _libyaml() -> Iterator[None]:
    """While a backend starts, parse YAML with PyYAML's libyaml parser (CSafeLoader: the same
    constructor, so the same data) instead of its pure-Python one: the Sumo Logic backend
    parses its bundled schema, about 240 YAML documents, at start-up (0.37 s -> 0.04 s)."""
    import yaml

    saved = yaml.safe_load, yaml.safe_load_all
    yaml.safe_load = functools.partial(yaml.load, Loader=rules.yaml_loader())
    yaml.safe_load_all = functools.partial(yaml.load_all, Loader=rules.yaml_loader())
    try:
        yield
    finally:
        yaml.safe_load, yaml.safe_load_all = saved


@functools.cache
def _installed_backends() -> dict[str, type[Backend]]:
    """pySigma's installed backend plugins, and this project's own (dac/)."""
    from sigma.plugins import InstalledSigmaPlugins

    from dac.cloudwatch import CloudWatchLogsInsightsBackend

    # Importing a backend imports its own pipelines module, which registers the YAML
    # transformation types it brings (Loki's set_custom_attribute): backends only are enough.
    plugins = InstalledSigmaPlugins.autodiscover(include_pipelines=False, include_validators=False)
    return {
        **plugins.backends,
        CloudWatchLogsInsightsBackend.identifier: CloudWatchLogsInsightsBackend,
    }


def _backend_class(identifier: str) -> type[Backend]:
    """The backend class `sigma convert -t <identifier>` uses."""
    backends = _installed_backends()
    if identifier not in backends:
        raise UserError(
            f"pySigma backend '{identifier}' is not installed; "
            "run `pip install -r requirements.txt`"
        )
    return backends[identifier]


def render(targets: Iterable[Target], envs: Sequence[str] = ()) -> dict[Path, str]:
    """Every output file and its content, in memory: nothing is written here. Without envs,
    each target's query for the rule alone (queries/<target>/<rule>.<ext>) and for each
    environment (queries/<target>/<env>/<rule>.<ext>), the deployable artifacts built from
    them, and a rule card per rule; with envs, for that set of them."""
    targets = list(targets)
    collections: dict[tuple[str, ...], SigmaCollection] = {}
    converted: dict[tuple[str, tuple[str, ...]], list[tuple[SigmaRule, str]]] = {}
    files: dict[Path, str] = {}
    for target in targets:
        for variant in target.variants(envs):
            if variant not in collections:
                collections[variant] = load_rules(variant)
                _check_unique_stems(collections[variant])
            folder = QUERIES_DIR / target.name / "+".join(variant)
            queries = convert_target(target, collections[variant])
            converted[target.name, variant] = [
                (rule, queries[rule_stem(rule)]) for rule in sigma_rules(collections[variant])
            ]
            for stem, query in queries.items():
                files[folder / f"{stem}.{target.extension}"] = query + "\n"
    for artifact in ARTIFACTS:
        for (target_name, variant), pairs in converted.items():
            if target_name == artifact.target:
                folder = QUERIES_DIR / artifact.name / "+".join(variant)
                options = {"name": artifact.name, **artifact.options}
                for name, content in artifact.build(pairs, options).items():
                    files[folder / name] = content.rstrip("\n") + "\n"
    if not envs and len(targets) == len(TARGETS):
        files |= rule_cards(converted)
    return files


def rule_cards(
    converted: dict[tuple[str, tuple[str, ...]], list[tuple[SigmaRule, str]]],
) -> dict[Path, str]:
    """queries/cards/<rule>.md: each target's query (the rule alone, or a platform-tied
    target's environment) with what verified it, and the environments' filters."""
    envs = []
    for env in environments():
        paths = sorted((FILTERS_DIR / env).rglob("*.yml"))
        titles = [(rules.parse(p, ROOT).filters[0].title, _rel(p)) for p in paths]
        envs.append((env, titles))
    corpus = ROOT / "tests" / "data" / "corpus" / "public_audit_events.jsonl"
    public = len(corpus.read_text(encoding="utf-8").splitlines()) if corpus.is_file() else 0
    own = len(list((ROOT / "tests" / "events").rglob("*.json")))
    evidence = (
        f"Every query verified by an engine was run over {public + own} labelled audit events "
        f"({public} public, {own} written for this project; tests/test_engines.py), each in "
        "the shape its platform stores them, and matched exactly the events labelled to "
        "alert; under each environment's filters, that platform's own token minters are quiet."
    )
    cards: dict[Path, str] = {}
    first = {t.name: t.variants()[0] for t in TARGETS}
    by_rule: dict[str, tuple[SigmaRule, list[tuple[str, ...]]]] = {}
    for target in TARGETS:
        for rule, query in converted.get((target.name, first[target.name]), []):
            row = (target.name, target.platform, target.verified_by, target.unverified, query)
            by_rule.setdefault(rule_stem(rule), (rule, []))[1].append(row)
    for stem, (rule, rows) in by_rule.items():
        cards[QUERIES_DIR / "cards" / f"{stem}.md"] = artifacts.rule_card(
            rule, rows, envs, evidence
        )
    return cards


def _check_unique_stems(collection: SigmaCollection) -> None:
    stems = [rule_stem(rule) for rule in sigma_rules(collection)]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:
        raise UserError(f"two rules share the file name {', '.join(twice)}; rename one")


# ---------------------------------------------------------------------------------------------
# Writing and checking


def write_files(files: dict[Path, str], prune: Path | None = None) -> list[Path]:
    """The one place that writes: each file atomically; with prune, remove stale files there.

    Returns the paths whose content changed.
    """
    changed = []
    for path, content in sorted(files.items()):
        data = content.encode("utf-8")
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        changed.append(path)
    if prune is not None and prune.is_dir():
        for stale in sorted(set(_generated_files(prune)) - set(files)):
            stale.unlink()
            changed.append(stale)
    return changed


def _generated_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and path.name != "README.md"]


@dataclass
class CheckResult:
    """How the committed queries/ differs from what the rules give."""

    checked: int
    missing: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)  # path -> unified diff lines
    stale: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.stale)

    def lines(self) -> list[str]:
        out = [f"missing: {path}" for path in self.missing]
        out += [line for diff in self.changed.values() for line in diff]
        out += [f"not generated by any rule and target (stale): {path}" for path in self.stale]
        return out

    def as_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "checked": self.checked,
                "missing": self.missing,
                "changed": sorted(self.changed),
                "stale": self.stale,
                "fix": None if self.ok else "run `python convert.py` and commit queries/",
            },
            indent=2,
        )


def check_files(files: dict[Path, str], stale_in: Path | None) -> CheckResult:
    """Compare the files as generated with those committed; with stale_in, files there that
    nothing generates count as differences too."""
    result = CheckResult(checked=len(files))
    for path, content in sorted(files.items()):
        rel = _rel(path)
        if not path.is_file():
            result.missing.append(rel)
            continue
        committed = path.read_text(encoding="utf-8")
        if committed != content:
            result.changed[rel] = list(
                difflib.unified_diff(
                    committed.splitlines(),
                    content.splitlines(),
                    f"{rel} (committed)",
                    f"{rel} (generated)",
                    lineterm="",
                )
            )
    on_disk = _generated_files(stale_in) if stale_in is not None and stale_in.is_dir() else []
    result.stale = [_rel(stale) for stale in sorted(set(on_disk) - set(files))]
    return result


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert.py",
        description="Convert the Sigma rules in sigma/rules/ into every target's query "
        "(queries/<target>/<rule>.<ext>), or replay Kubernetes audit logs through them.",
    )
    parser.add_argument(
        "-t",
        "--target",
        action="append",
        choices=[t.name for t in TARGETS],
        metavar="TARGET",
        help="convert for this target only (repeatable; default: all; see --list)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="ENV",
        help="apply this environment's filters from sigma/filters/ENV/ (repeatable: one query "
        "with all of them); default: the rule alone and each environment",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if queries/ differs from what the rules give",
    )
    mode.add_argument("--stdout", action="store_true", help="print the queries, write nothing")
    parser.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="--check's report on stdout: a readable diff (text) or one JSON object for "
        "machines: ok, checked, missing, changed, stale",
    )
    mode.add_argument("--list", action="store_true", help="list the targets and exit")
    sub = parser.add_subparsers(dest="command", metavar="replay")
    replay = sub.add_parser(
        "replay",
        help="run the rules over Kubernetes audit log files",
        description="Run the rules over Kubernetes audit log files (audit.k8s.io/v1 events, one "
        "JSON object per line, .gz allowed) on DuckDB, through the duckdb target's query. "
        "Alerts go to stdout as JSON lines, a summary to stderr; exit 0 with or without alerts.",
    )
    replay.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="ENV",
        help="apply this environment's filters from sigma/filters/ENV/ (repeatable)",
    )
    replay.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audit log file")
    return parser


def list_targets() -> str:
    """Every target as a block: platform, data, the vendor source of its field mapping, what
    no vendor source confirms, and the engine that verifies its query."""
    blocks = []
    for t in TARGETS:
        rows = [
            ("platform", t.platform),
            ("data", t.data_source),
            ("mapping source", t.source),
            *([("UNVERIFIED", t.unverified)] if t.unverified else []),
            ("verified by", t.verified_by),
        ]
        blocks.append("\n".join([t.name, *(f"  {key + ':':<16}{value}" for key, value in rows)]))
    return "\n\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.format != "text" and not args.check:
        parser.error("--format goes with --check")
    try:
        if args.command == "replay":
            from dac.replay import run_replay

            collection = load_rules(args.env)
            queries = convert_target(REPLAY_TARGET, collection)
            pairs = [(rule, queries[rule_stem(rule)]) for rule in sigma_rules(collection)]
            return run_replay(args.files, pairs, sys.stdout, sys.stderr)
        if args.list:
            print(list_targets())
            return 0
        targets = [TARGETS_BY_NAME[name] for name in args.target] if args.target else TARGETS
        files = render(targets, args.env)
        partial = bool(args.target or args.env)
        if args.stdout:
            for path, content in files.items():
                print(f"# {_rel(path)}\n{content}", end="")
            return 0
        if args.check:
            result = check_files(files, stale_in=None if partial else QUERIES_DIR)
            if args.format == "json":
                print(result.as_json())
            elif not result.ok:
                print("\n".join(result.lines()))
            if not result.ok:
                print(
                    f"convert.py --check: {_rel(QUERIES_DIR)}/ is out of date; "
                    "run `python convert.py` and commit queries/",
                    file=sys.stderr,
                )
                return 1
            print(f"convert.py --check: {len(files)} query files up to date", file=sys.stderr)
            return 0
        changed = write_files(files, prune=None if partial else QUERIES_DIR)
        for path in files:
            print(_rel(path))
        print(f"convert.py: {len(files)} query files, {len(changed)} changed", file=sys.stderr)
        return 0
    except UserError as error:
        print(f"convert.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
