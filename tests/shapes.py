"""Audit events in the shape each platform stores them, derived from the raw Event."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any


def elastic_kubernetes(event: dict[str, Any]) -> dict[str, Any]:
    """A document as Elastic's Kubernetes integration indexes a raw audit Event
    (packages/kubernetes/data_stream/audit_logs, ingest pipeline default.yml): the Event under
    kubernetes.audit, annotation keys with "." replaced by "_", request/response object
    metadata dropped, and the ECS copies: event.action (verb), event.outcome (decision),
    user.name, user.id, user_agent.original, source.ip and client.ip."""
    audit = copy.deepcopy(event)
    for member in ("requestObject", "responseObject"):
        if isinstance(audit.get(member), dict):
            audit[member].pop("metadata", None)
    doc: dict[str, Any] = {"event": {"kind": "event"}, "kubernetes": {"audit": audit}}
    if "annotations" in audit:
        annotations = audit["annotations"]
        audit["annotations"] = {key.replace(".", "_"): value for key, value in annotations.items()}
        outcome = {"allow": "success", "forbid": "failure"}
        decision = annotations.get("authorization.k8s.io/decision")
        if decision in outcome:
            doc["event"]["outcome"] = outcome[decision]
    if audit.get("verb") is not None:
        doc["event"]["action"] = audit["verb"]
    user = audit.get("user") or {}
    ecs_user = {k: user[v] for k, v in (("name", "username"), ("id", "uid")) if user.get(v)}
    if ecs_user:
        doc["user"] = ecs_user
    if audit.get("userAgent"):
        doc["user_agent"] = {"original": audit["userAgent"]}
    if audit.get("sourceIPs"):
        doc["source"] = {"ip": audit["sourceIPs"]}
        doc["client"] = {"ip": audit["sourceIPs"]}
    return doc


# The Kubernetes integration's mapping (packages/kubernetes/data_stream/audit_logs/fields/
# fields.yml; manifest.yml maps the data stream `dynamic: false`): the kubernetes.audit paths
# it declares, by type. Every other kubernetes.audit path is in _source only, not indexed.
ELASTIC_KUBERNETES_AUDIT_TEXT = {
    "user.groups",
    "impersonatedUser.groups",
    "sourceIPs",
    "responseStatus.message",
    "annotations.authorization_k8s_io/reason",
    "requestObject.spec.containers.image",
}
ELASTIC_KUBERNETES_AUDIT_KEYWORD = {
    *("apiVersion", "kind", "level", "auditID", "stage", "requestURI", "verb", "userAgent"),
    *("user.username", "user.uid", "impersonatedUser.username", "impersonatedUser.uid"),
    *(f"objectRef.{name}" for name in ("resource", "namespace", "name", "uid", "apiGroup")),
    *(f"objectRef.{name}" for name in ("apiVersion", "resourceVersion", "subresource")),
    "responseStatus.status",
    "responseStatus.reason",
    "annotations.authorization_k8s_io/decision",
    "requestObject.spec.type",
    "requestObject.spec.serviceAccountName",
    "requestObject.spec.restartPolicy",
    "requestObject.spec.containers.securityContext.capabilities.add",
    "responseObject.roleRef.kind",
}
ELASTIC_KUBERNETES_AUDIT_KEYWORD |= {
    # booleans (indexed as true/false) and keywords of the pod spec
    *(f"requestObject.spec.{name}" for name in ("hostNetwork", "hostIPC", "hostPID")),
    "requestObject.spec.securityContext.runAsNonRoot",
    *(
        f"requestObject.spec.containers.securityContext.{name}"
        for name in ("privileged", "allowPrivilegeEscalation", "runAsNonRoot", "procMount")
    ),
    *(f"responseObject.spec.{name}" for name in ("hostNetwork", "hostIPC", "hostPID")),
    "responseObject.spec.restartPolicy",
    *(
        f"responseObject.spec.containers.securityContext.{name}"
        for name in ("privileged", "allowPrivilegeEscalation")
    ),
}
ELASTIC_KUBERNETES_AUDIT_LONG = {
    "responseStatus.code",
    "requestObject.spec.securityContext.runAsUser",
    "requestObject.spec.securityContext.runAsGroup",
    "requestObject.spec.containers.securityContext.runAsUser",
    "requestObject.spec.containers.securityContext.runAsGroup",
    "responseObject.spec.containers.securityContext.runAsUser",
}
# `flattened` fields: the root and every key under it hold keywords.
ELASTIC_KUBERNETES_AUDIT_FLATTENED = tuple(
    f"{member}.spec.{name}"
    for member in ("requestObject", "responseObject")
    for name in ("volumes.hostPath", "containers.volumeMounts")
)
# ECS fields of type `ip` the integration's ingest pipeline fills from sourceIPs.
ELASTIC_IP_FIELDS = {"source.ip", "client.ip"}


def integration_types(
    prefix: str,
    keyword: set[str],
    text: set[str],
    long: set[str],
    flattened: tuple[str, ...] = (),
    ip: frozenset[str] = frozenset(),
) -> Callable[[str], str]:
    """The Elasticsearch type of each document path in an Elastic integration's data stream
    that maps the Event under `prefix` with `dynamic: false`: the Event paths its fields.yml
    declares, by type (a flattened field's keys keyword at every depth), user.extra and
    impersonatedUser.extra keyword (object_type keyword), every other Event path not indexed
    ("none"); outside the prefix, the ECS copies: `ip` fields, else keyword."""
    flattened_keys = tuple(f"{root}." for root in flattened)

    def types(path: str) -> str:
        if path in ip:
            return "ip"
        if not path.startswith(prefix):
            return "keyword"
        member = path.removeprefix(prefix)
        if member.startswith(("user.extra.", "impersonatedUser.extra.")):
            return "keyword"
        if member in flattened or member.startswith(flattened_keys):
            return "keyword"
        if member in text:
            return "text"
        if member in long:
            return "long"
        return "keyword" if member in keyword else "none"

    return types


# The Kubernetes integration: source.ip and client.ip are `ip` (addresses and CIDR ranges).
elastic_kubernetes_types = integration_types(
    "kubernetes.audit.",
    ELASTIC_KUBERNETES_AUDIT_KEYWORD,
    ELASTIC_KUBERNETES_AUDIT_TEXT,
    ELASTIC_KUBERNETES_AUDIT_LONG,
    ELASTIC_KUBERNETES_AUDIT_FLATTENED,
    frozenset(ELASTIC_IP_FIELDS),
)


# OpenSearch's dynamic mapping gives a string a keyword sub-field with ignore_above 256: a
# longer value is kept in _source but not indexed there (OpenSearch documentation,
# mappings/mapping-parameters/ignore-above).
OPENSEARCH_KEYWORD_IGNORE_ABOVE = 256


# Elastic's AWS integration, EKS audit data stream (packages/aws/data_stream/eks_audit/
# fields/fields.yml; manifest.yml maps it `dynamic: false`): the aws.eks.audit paths it
# declares, by type. Every other aws.eks.audit path is in _source only.
ELASTIC_EKS_AUDIT_TEXT = {
    "userAgent",
    "responseStatus.message",
    "annotations.authorization_k8s_io/reason",
    "annotations.pod-security_kubernetes_io/audit-violations",
}
ELASTIC_EKS_AUDIT_KEYWORD = {
    *("apiVersion", "kind", "level", "auditID", "stage", "requestURI", "verb", "sourceIPs"),
    *(f"user.{name}" for name in ("groups", "username", "uid")),
    *(f"impersonatedUser.{name}" for name in ("groups", "username", "uid")),
    *(f"objectRef.{name}" for name in ("resource", "namespace", "name", "uid", "apiGroup")),
    *(f"objectRef.{name}" for name in ("apiVersion", "resourceVersion", "subresource")),
    *(f"responseStatus.{name}" for name in ("status", "reason")),
    "annotations.authorization_k8s_io/decision",
}
ELASTIC_EKS_AUDIT_LONG = {"responseStatus.code", "responseStatus.retryAfterSeconds"}


# The AWS integration's EKS data stream: sourceIPs is a keyword there (no CIDR).
elastic_aws_eks_types = integration_types(
    "aws.eks.audit.", ELASTIC_EKS_AUDIT_KEYWORD, ELASTIC_EKS_AUDIT_TEXT, ELASTIC_EKS_AUDIT_LONG
)


def _without_empty(value: Any) -> Any:
    """The integration's last script: null and empty values dropped, recursively."""
    if isinstance(value, dict):
        kept = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", {}, [])}
    if isinstance(value, list):
        kept_items = [_without_empty(v) for v in value]
        return [v for v in kept_items if v not in (None, "", {}, [])]
    return value


def elastic_aws_eks_audit(event: dict[str, Any]) -> dict[str, Any]:
    """A document as Elastic's AWS integration indexes an EKS audit Event (logs-aws.eks_audit-*;
    packages/aws/data_stream/eks_audit/elasticsearch/ingest_pipeline/audit.yml, sample_event.json):
    the Event under aws.eks.audit with request/response object metadata dropped, annotation and
    user.extra keys "." -> "_", objectRef.apiGroup "core" for the core group, and the ECS
    copies: event.action (verb), event.id (auditID), event.outcome, user.name, user.id,
    user.group.name, user_agent.original, source.ip, client.ip, orchestrator.*; empty values
    dropped."""
    audit = copy.deepcopy(event)
    for member in ("requestObject", "responseObject"):
        if isinstance(audit.get(member), dict):
            audit[member].pop("metadata", None)
    ref = audit.get("objectRef")
    if isinstance(ref, dict) and ref.get("resource") and not ref.get("apiGroup"):
        ref["apiGroup"] = "core"
    if isinstance(audit.get("annotations"), dict):
        audit["annotations"] = {k.replace(".", "_"): v for k, v in audit["annotations"].items()}
    for identity in ("user", "impersonatedUser"):
        extra = (audit.get(identity) or {}).get("extra")
        if isinstance(extra, dict):
            audit[identity]["extra"] = {k.replace(".", "_"): v for k, v in extra.items()}
    doc: dict[str, Any] = {"event": {"kind": "event"}, "aws": {"eks": {"audit": audit}}}
    decision = (audit.get("annotations") or {}).get("authorization_k8s_io/decision")
    code = (audit.get("responseStatus") or {}).get("code")
    if decision in ("allow", "forbid"):
        doc["event"]["outcome"] = "success" if decision == "allow" else "failure"
    if isinstance(code, int) and code > 0:
        doc["event"]["outcome"] = "success" if code < 400 else "failure"
    doc["event"]["action"] = audit.get("verb")
    doc["event"]["id"] = audit.get("auditID")
    user = audit.get("user") or {}
    doc["user"] = {"name": user.get("username"), "id": user.get("uid")}
    doc["user"]["group"] = {"name": user.get("groups")}
    doc["user_agent"] = {"original": audit.get("userAgent")}
    doc["source"] = {"ip": audit.get("sourceIPs")}
    doc["client"] = {"ip": audit.get("sourceIPs")}
    ref = audit.get("objectRef") or {}
    doc["orchestrator"] = {
        "type": "kubernetes",
        "namespace": ref.get("namespace"),
        "resource": {"type": ref.get("resource"), "name": ref.get("name")},
    }
    return _without_empty(doc)


def opensearch_dynamic(event: dict[str, Any]) -> dict[str, Any]:
    """A document as OpenSearch's dynamic mapping indexes a raw audit Event shipped as JSON:
    every string also as an exact `<path>.keyword` sub-field, unless longer than 256
    characters (numbers and booleans stay as they are); keys with dots, like the
    annotations', become object paths."""

    def keyword(item: Any) -> Any:
        strings = item if isinstance(item, list) else [item]
        kept = [x for x in strings if len(x) <= OPENSEARCH_KEYWORD_IGNORE_ABOVE]
        return kept if isinstance(item, list) else (kept[0] if kept else None)

    def with_keywords(value: Any) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                out[key] = with_keywords(item)
                strings = item if isinstance(item, list) else [item]
                if strings and all(isinstance(x, str) for x in strings):
                    out[f"{key}.keyword"] = keyword(item)
            return out
        if isinstance(value, list):
            return [with_keywords(item) for item in value]
        return value

    return with_keywords(copy.deepcopy(event))


# AKSAudit columns (Azure Monitor table reference) and the audit Event member each holds.
AKS_AUDIT_STRINGS = {
    "Verb": "verb",
    "Stage": "stage",
    "Level": "level",
    "AuditId": "auditID",
    "RequestUri": "requestURI",
    "UserAgent": "userAgent",
}
AKS_AUDIT_DYNAMICS = {
    "ObjectRef": "objectRef",
    "User": "user",
    "SourceIps": "sourceIPs",
    "ResponseStatus": "responseStatus",
    "Annotations": "annotations",
    "RequestObject": "requestObject",
    "ResponseObject": "responseObject",
}


def aks_audit_row(event: dict[str, Any]) -> dict[str, Any]:
    """A row of Azure Monitor's AKSAudit (and AKSAuditAdmin) table: string columns hold the
    Event's scalars, empty when absent (a KQL string is never null), dynamic columns its
    objects and arrays, null when absent. The Event has no impersonation column there."""
    row: dict[str, Any] = {col: event.get(key) or "" for col, key in AKS_AUDIT_STRINGS.items()}
    row |= {col: event.get(key) for col, key in AKS_AUDIT_DYNAMICS.items()}
    return row


# HTTP status -> gRPC code as Cloud Audit Logs record it (google.rpc.Code).
GRPC_CODES = {200: 0, 201: 0, 400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 6, 500: 13}


def gke_method_name(event: dict[str, Any]) -> str:
    """GKE's protoPayload.methodName: io.k8s.<group>.<version>.<resource>[.<sub>].<verb>, the
    group "core" for the core group, else its DNS labels without the k8s.io suffix, reversed
    (rbac.authorization.k8s.io -> authorization.rbac), as GKE writes it in the method names
    elastic/detection-rules' GKE rules match (rules/integrations/gcp/
    persistence_gcp_gke_cluster_admin_role_binding.toml: io.k8s.authorization.rbac.v1...;
    persistence_gcp_gke_admission_webhook_created_or_modified.toml:
    io.k8s.admissionregistration.v1...) and Google's GoogleCloudPlatform/khi tests
    (io.k8s.apps.v1.deployments.scale.update). For groups outside k8s.io (custom resources)
    no example is public: the same reversal is assumed, unverified."""
    ref = event.get("objectRef") or {}
    labels = (ref.get("apiGroup") or "core").removesuffix(".k8s.io").split(".")
    parts = ["io.k8s", ".".join(reversed(labels)), ref.get("apiVersion") or "v1"]
    parts += [ref.get("resource"), ref.get("subresource"), event.get("verb")]
    return ".".join(part for part in parts if part)


def gke_resource_name(event: dict[str, Any]) -> str | None:
    """GKE's protoPayload.resourceName: <group|core>/<version>[/namespaces/<ns>]/<resource>
    [/<name>[/<subresource>]]."""
    ref = event.get("objectRef") or {}
    if not ref.get("resource"):
        return None
    parts = [ref.get("apiGroup") or "core", ref.get("apiVersion") or "v1"]
    if ref.get("namespace"):
        parts += ["namespaces", ref["namespace"]]
    parts += [ref["resource"], ref.get("name"), ref.get("subresource")]
    return "/".join(part for part in parts if part)


def gke_cloud_audit_log(event: dict[str, Any]) -> dict[str, Any] | None:
    """The Cloud Audit Log record GKE writes for a request: one per request (no stages, so
    None for the earlier stages of a request), verb and resource in the method name, the
    caller in authenticationInfo, the HTTP status as a gRPC code, annotations as labels.
    tests/test_shapes.py checks these against the GKE records in the corpus (Panther's hand-written
    test cases) and the method names GKE's own tooling and Elastic's GKE rules use."""
    if event.get("stage") in ("RequestReceived", "ResponseStarted"):
        return None
    user = event.get("user") or {}
    status = (event.get("responseStatus") or {}).get("code")
    payload: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "serviceName": "k8s.io",
        "methodName": gke_method_name(event),
        "authenticationInfo": {"principalEmail": user["username"]} if "username" in user else {},
        "requestMetadata": {
            k: v
            for k, v in (
                ("callerIp", (event.get("sourceIPs") or [None])[0]),
                ("callerSuppliedUserAgent", event.get("userAgent")),
            )
            if v
        },
    }
    if resource_name := gke_resource_name(event):
        payload["resourceName"] = resource_name
    if status is not None:
        payload["status"] = {"code": GRPC_CODES.get(status, 2)}
    record = {
        "insertId": event.get("auditID"),
        "protoPayload": payload,
        "resource": {"type": "k8s_cluster"},
    }
    if event.get("annotations"):
        record["labels"] = dict(event["annotations"])
    return record


def elastic_kubernetes_gke_pubsub(record: dict[str, Any]) -> dict[str, Any]:
    """A GKE Cloud Audit Log record as Elastic's Kubernetes integration indexes it from its GCP
    Pub/Sub input (packages/kubernetes/data_stream/audit_logs/_dev/test/pipeline/
    test-audit.log-expected.json, the GKE document): the record kept under kubernetes.audit
    with protoPayload as it is, insertId as auditID, the labels as annotations (keys "." ->
    "_"), the gRPC status as responseStatus.code; no verb, objectRef or user, and no ECS
    copies of them. protoPayload is not in the data stream's fields.yml (dynamic: false), so
    it is not searchable."""
    payload = record["protoPayload"]
    labels = record.get("labels") or {}
    audit: dict[str, Any] = {
        "auditID": record.get("insertId"),
        "protoPayload": payload,
        "resource": record.get("resource"),
        "annotations": {key.replace(".", "_"): value for key, value in labels.items()},
    }
    if "status" in payload:
        audit["responseStatus"] = {"code": payload["status"]["code"]}
    return {"event": {"kind": "event"}, "kubernetes": {"audit": audit}}


def elastic_gcp_audit(record: dict[str, Any]) -> dict[str, Any]:
    """A Cloud Audit Log record as Elastic's GCP integration indexes it (logs-gcp.audit-*,
    packages/gcp/data_stream/audit): event.action = methodName, client.user.email and
    user.email = principalEmail, source.ip = callerIp, user_agent.original, service.name,
    gcp.audit.resource_name and gcp.audit.status.code, event.outcome from the status, the
    record's labels as gcp.audit.labels, and orchestrator.namespace / .resource.type /
    .resource.name parsed from the resource name."""
    payload = record["protoPayload"]
    principal = payload.get("authenticationInfo", {}).get("principalEmail")
    metadata = payload.get("requestMetadata", {})
    code = payload.get("status", {}).get("code")
    doc: dict[str, Any] = {
        "event": {"action": payload["methodName"], "id": record.get("insertId")},
        "service": {"name": payload["serviceName"]},
        "gcp": {"audit": {"resource_name": payload.get("resourceName")}},
    }
    if code is not None:
        doc["gcp"]["audit"]["status"] = {"code": code}
        doc["event"]["outcome"] = "success" if code == 0 else "failure"
    if principal:
        doc["client"] = {"user": {"email": principal}}
        doc["user"] = {"email": principal}
    if metadata.get("callerIp"):
        doc["source"] = {"ip": metadata["callerIp"]}
    if record.get("labels"):  # the ingest pipeline's gcp.audit.labels <- labels (flattened)
        doc["gcp"]["audit"]["labels"] = dict(record["labels"])
    if metadata.get("callerSuppliedUserAgent"):
        doc["user_agent"] = {"original": metadata["callerSuppliedUserAgent"]}
    parsed = re.match(
        r".*?/v\d+[a-z0-9]*/namespaces/([^/]+)/([a-z][a-z0-9.]*)(?:/([^/]+))?",
        payload.get("resourceName") or "",
    )
    if parsed:  # the integration's grok on the resource name
        namespace, resource_type, name = parsed.groups()
        doc["orchestrator"] = {"namespace": namespace, "resource": {"type": resource_type}}
        if name:
            doc["orchestrator"]["resource"]["name"] = name
    return doc


AKS_OPERATION = "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read"


def aks_diagnostic_record(event: dict[str, Any], category: str = "kube-audit") -> dict[str, Any]:
    """The Azure diagnostic record AKS writes for an audit Event (category kube-audit, the
    Event as a JSON string in properties.log), as Event Hubs and storage exports carry it.
    tests/test_shapes.py checks it against the AKS records in the corpus (real exports among
    them)."""
    return {
        "category": category,
        "operationName": AKS_OPERATION,
        "properties": {
            "log": json.dumps(event),
            "pod": "kube-apiserver-5d8f7c9b6-abcde",
            "stream": "stdout",
        },
        "resourceId": "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/RG"
        "/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AKS",
        "time": event.get("stageTimestamp") or event.get("requestReceivedTimestamp"),
    }


def aks_diagnostic_records(event: dict[str, Any]) -> list[dict[str, Any]]:
    """Every record AKS writes for an Event when a cluster sends both audit categories:
    kube-audit, and kube-audit-admin unless the verb is get or list (MicrosoftDocs/
    azure-reference-other azure-monitor-ref/tables/aksauditadmin.md)."""
    records = [aks_diagnostic_record(event)]
    if event.get("verb") not in ("get", "list"):
        records.append(aks_diagnostic_record(event, "kube-audit-admin"))
    return records


def elastic_azure_platformlogs(record: dict[str, Any]) -> dict[str, Any]:
    """An Azure diagnostic record as Elastic's Azure integration indexes it
    (logs-azure.platformlogs-*, packages/azure/data_stream/platformlogs): category and
    operation name under azure.platformlogs, properties.log parsed from its JSON string into
    the flattened field azure.platformlogs.properties."""
    properties = dict(record["properties"])
    properties["log"] = json.loads(properties["log"])
    return {
        "azure": {
            "platformlogs": {
                "category": record["category"],
                "operation_name": record["operationName"],
                "properties": properties,
            }
        }
    }


def elastic_gcp_types(path: str) -> str:
    """The Elasticsearch type of a path in the GCP integration's audit data stream: source.ip
    an `ip` field (ECS), gcp.audit.labels flattened (keywords), the rest keyword."""
    return "ip" if path in ELASTIC_IP_FIELDS else "keyword"
