"""The targets table (one row per query a platform runs: backend, pipelines, what it expects and
what verifies it) and the artifacts table (what each platform imports, built from a target's
queries). Adding a SIEM is a pipeline file under pipelines/ plus one Target row here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from k8s_audit_detect import artifacts, paths, rules


def environments() -> list[str]:
    """The environments that have filters: one folder each under sigma/filters/."""
    return rules.environments(paths.FILTERS_DIR)


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
    # Correlation rules: the backend (identifier) that converts them, a subclass of `backend`
    # with correlation templates where the stock one has none or gets them wrong
    # (k8s_audit_detect/correlation_backends.py), and what this target cannot express, each
    # with why: a correlation type, "aliases", or "all" (k8s_audit_detect/correlations.py).
    correlation_backend: str | None = None
    correlation_limits: tuple[tuple[str, str], ...] = ()
    # What runs this target's correlation queries here (tests/test_correlations.py), if any.
    correlation_verified_by: str = "expected string only (no engine here)"

    def correlation_support(self) -> dict[str, str]:
        """Each correlation feature: "" if this target expresses it, else why not."""
        limits = dict(self.correlation_limits)
        every = limits.get("all")
        return {f: every or limits.get(f, "") for f in CORRELATION_FEATURES}

    @property
    def sigma_cli_pipeline(self) -> str:
        """The name sigma-cli knows this target's whole pipeline chain by, once the package
        is installed (k8s_audit_detect/plugin.py)."""
        return "k8s_audit_" + self.name.replace("-", "_")

    def variants(self, requested: Sequence[str] = ()) -> list[tuple[str, ...]]:
        """The environment sets to convert for: the requested set if it fits this target,
        else the rule alone and each environment (or only this target's environments)."""
        if requested:
            fits = self.environments is None or set(requested) <= set(self.environments)
            return [tuple(requested)] if fits else []
        if self.environments is not None:
            return [(env,) for env in self.environments]
        return [(), *((env,) for env in environments())]


CORRELATION_FEATURES = ("event_count", "value_count", "temporal", "temporal_ordered", "aliases")
SEQUENCES = "the sequences in tests/sequences/ (tests/test_correlations.py)"
# Why a target has no correlation rules, or lacks some.
LUCENE_NO_CORRELATION = (
    (
        "all",
        "a Lucene query string matches single events: it cannot count, group or order them "
        "(the platform's ES|QL or EQL target can)",
    ),
)
ELASTIC_NO_ALIASES = (
    "the integration does not index the issued-credential-id annotation (`dynamic: false`), "
    "and pySigma's ES|QL and EQL backends cannot join rules on differently named fields"
)
EQL_LIMITS = (
    (
        "event_count",
        "an EQL sequence matches ordered events; `with runs=` counts consecutive "
        "events only (the ES|QL target counts)",
    ),
    (
        "value_count",
        "EQL cannot count distinct values (a sequence `by` a field means the same "
        "value; the ES|QL target counts them)",
    ),
    ("temporal", "EQL's `sample` is unordered but has no time span (the ES|QL target can)"),
    ("aliases", ELASTIC_NO_ALIASES),
)
ESQL_LIMITS = (("aliases", ELASTIC_NO_ALIASES),)
GKE_NO_CORRELATION = (
    (
        "all",
        "GKE's Cloud Audit Logs carry a gRPC status, not the HTTP one the base rules tell "
        "granted from denied tokens by, and no issued-credential-id; that GKE logs TokenRequest at "
        "all is unverified",
    ),
)
LOKI_LIMITS = (
    (
        "temporal_ordered",
        "LogQL's set operators join vectors by labels and cannot order "
        "events (the Loki backend refuses it)",
    ),
    (
        "aliases",
        "Loki's json parser skips arrays, so neither the credential id (a list in "
        "user.extra) nor sourceIPs can be read, and the Loki backend counts values of one "
        "rule only",
    ),
)
CLOUDWATCH_LIMITS = (
    (
        "temporal",
        "Logs Insights' stats cannot tell which rule an event matched (no conditional aggregation)",
    ),
    ("temporal_ordered", "Logs Insights cannot order events within a group"),
    (
        "aliases",
        "Logs Insights names array elements sourceIPs.0, sourceIPs.1, ...: the last "
        "one, the address the API server saw, cannot be picked",
    ),
)
NOT_IMPLEMENTED = (
    "its pySigma backend has no correlation support and this project adds none for it yet"
)


GKE_UNVERIFIED = (
    "whether GKE logs TokenRequest at all: Elastic ships a rule on its method name, Panther "
    "states GKE does not log it, and no real GKE record of it is public; the method names of "
    "API groups outside k8s.io (no public example: the labels assumed reversed as for k8s.io's)"
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
        correlation_limits=LUCENE_NO_CORRELATION,
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
        correlation_backend="k8s_eql",
        correlation_limits=EQL_LIMITS,
        correlation_verified_by="Elastic eql engine (PythonEngine, events in time order) over "
        + SEQUENCES,
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
        correlation_backend="k8s_esql",
        correlation_limits=ESQL_LIMITS,
    ),
    Target(
        name="elastic-eks-lucene",
        backend="lucene",
        pipelines=("elastic_aws_eks_audit.yml", "lucene_exact_values.yml"),
        extension="lucene",
        platform="Elastic (Kibana query, Lucene), EKS",
        data_source="logs-aws.eks_audit-* (AWS integration 8.9.0+, EKS audit logs)",
        verified_by="Apache Lucene QueryParser + MemoryIndex (Elasticsearch query_string rules)",
        source="elastic/integrations packages/aws/data_stream/eks_audit/ (fields/fields.yml, "
        "manifest.yml, elasticsearch/ingest_pipeline/audit.yml)",
        environments=("eks",),
        correlation_limits=LUCENE_NO_CORRELATION,
    ),
    Target(
        name="elastic-eks-eql",
        backend="eql",
        pipelines=("elastic_aws_eks_audit.yml", "elastic_eql_case_sensitive.yml"),
        extension="eql",
        platform="Elastic Security (EQL), EKS",
        data_source="logs-aws.eks_audit-* (AWS integration 8.9.0+, EKS audit logs)",
        verified_by="Elastic eql engine (PythonEngine)",
        source="elastic/integrations packages/aws/data_stream/eks_audit/ (fields/fields.yml, "
        "manifest.yml, elasticsearch/ingest_pipeline/audit.yml)",
        environments=("eks",),
        correlation_backend="k8s_eql",
        correlation_limits=EQL_LIMITS,
        correlation_verified_by="Elastic eql engine (PythonEngine, events in time order) over "
        + SEQUENCES,
    ),
    Target(
        name="elastic-eks-esql",
        backend="esql",
        pipelines=("elastic_aws_eks_audit.yml", "elastic_esql_strings.yml"),
        extension="esql",
        platform="Elastic (ES|QL), EKS",
        data_source="logs-aws.eks_audit-* (AWS integration 8.9.0+, EKS audit logs)",
        verified_by="expected string only (no ES|QL engine here)",
        source="elastic/integrations packages/aws/data_stream/eks_audit/ (fields/fields.yml, "
        "manifest.yml, elasticsearch/ingest_pipeline/audit.yml)",
        environments=("eks",),
        correlation_backend="k8s_esql",
        correlation_limits=ESQL_LIMITS,
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
        correlation_limits=LUCENE_NO_CORRELATION,
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
        correlation_limits=GKE_NO_CORRELATION,
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
        correlation_limits=GKE_NO_CORRELATION,
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
        correlation_limits=LUCENE_NO_CORRELATION,
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
        correlation_backend="k8s_splunk",
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
        correlation_limits=LUCENE_NO_CORRELATION,
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
        correlation_backend="k8s_kusto",
        environments=("aks",),
        correlation_verified_by=f"duckdb-kql over {SEQUENCES}",
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
        correlation_backend="k8s_kusto",
        environments=("aks",),
        correlation_limits=(
            (
                "aliases",
                "AKSAuditAdmin leaves out get and list, most of what a token does, so a stolen "
                "pod token's use cannot be told from the pod's own there, and a minted token's "
                "reads (secrets) never show (use AKSAudit)",
            ),
        ),
        correlation_verified_by="expected string (the same query as sentinel-aksaudit's, "
        "executed there, over another table)",
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
        correlation_backend="k8s_kusto",
        environments=("aks",),
        correlation_verified_by=f"duckdb-kql over {SEQUENCES}, both audit categories",
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
        correlation_backend="loki",
        correlation_limits=LOKI_LIMITS,
        correlation_verified_by="Grafana's LogQL grammar (parses) + reviewed expected string",
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
        correlation_limits=(("all", NOT_IMPLEMENTED),),
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
        correlation_limits=(("all", NOT_IMPLEMENTED),),
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
        correlation_limits=(("all", NOT_IMPLEMENTED),),
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
        correlation_backend="cloudwatch_insights",
        correlation_limits=CLOUDWATCH_LIMITS,
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
        correlation_backend="k8s_spark",
        correlation_verified_by=f"local PySpark over {SEQUENCES}",
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
        correlation_backend="k8s_duckdb",
        correlation_verified_by="DuckDB (convert.py replay, each sequence split over two files) "
        "over " + SEQUENCES,
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
    # The correlation rules as Kibana ES|QL rules (counts) and EQL rules (ordered sequences):
    # the rule's query language, the index in the ES|QL query's FROM, in `index` for EQL.
    Artifact(
        "kibana-kubernetes-esql",
        "elastic-esql",
        artifacts.kibana_rules,
        {"type": "esql", "language": "esql"},
    ),
    Artifact(
        "kibana-kubernetes-eql",
        "elastic-eql",
        artifacts.kibana_rules,
        {"index": ("logs-kubernetes.audit_logs-*",), "type": "eql", "language": "eql"},
    ),
    Artifact(
        "kibana-eks",
        "elastic-eks-lucene",
        artifacts.kibana_rules,
        {"index": ("logs-aws.eks_audit-*",), **KIBANA_LUCENE},
    ),
    Artifact(
        "kibana-eks-esql",
        "elastic-eks-esql",
        artifacts.kibana_rules,
        {"type": "esql", "language": "esql"},
    ),
    Artifact(
        "kibana-eks-eql",
        "elastic-eks-eql",
        artifacts.kibana_rules,
        {"index": ("logs-aws.eks_audit-*",), "type": "eql", "language": "eql"},
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
            "version": "1.0.0",
            "title": "Kubernetes token-request detections",
            "author": "k8s-token-detect contributors",
            "description": "Sigma detections for Kubernetes TokenRequest abuse",
            "input_macro": "kube_audit",
            # As Splunk's own content defines it (splunk/security_content macros/kube_audit.yml:
            # source="kubernetes"; data_sources/kubernetes_audit.yml: source kubernetes,
            # sourcetype _json, the raw Event). EKS through the Splunk Add-on for AWS: Splunk's
            # content reads it as sourcetype="aws:cloudwatchlogs:eks" (macros/
            # aws_cloudwatchlogs_eks.yml), the Event's fields at the top of the record and the
            # log group in `source` (detections/cloud/amazon_eks_kubernetes_pod_scan_detection.yml
            # searches user.username, verb, objectRef.resource and renames source as
            # cluster_name). Unverified: whether the add-on sets that sourcetype itself or the
            # input is configured with it (no add-on documentation of it found).
            "input_macro_conf": {
                "definition": 'source="kubernetes"',
                "description": "Where your Kubernetes audit events are (Splunk's own default, "
                "security_content macros/kube_audit.yml): set your index, source and sourcetype "
                '(raw audit Events: sourcetype="_json"; EKS through the Splunk Add-on for AWS: '
                'sourcetype="aws:cloudwatchlogs:eks", each CloudWatch record is one audit Event '
                "with its fields at the top level)",
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
            # a correlation grouped by user.username: its group's key column
            "correlation_account_column": "| extend AccountName = User_username",
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
            # a correlation grouped by user.username: its group's key column
            "correlation_account_column": "| extend AccountName = User_username",
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
            "correlation_account_column": "| extend AccountName = event_user_username",
        },
    ),
)
