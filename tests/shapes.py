"""Audit events in the shape each platform stores them, derived from the raw Event."""

from __future__ import annotations

import copy
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


def opensearch_dynamic(event: dict[str, Any]) -> dict[str, Any]:
    """A document as OpenSearch's dynamic mapping indexes a raw audit Event shipped as JSON:
    every string also as an exact `<path>.keyword` sub-field (numbers and booleans stay as
    they are); keys with dots, like the annotations', become object paths."""

    def with_keywords(value: Any) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                out[key] = with_keywords(item)
                strings = item if isinstance(item, list) else [item]
                if strings and all(isinstance(x, str) for x in strings):
                    out[f"{key}.keyword"] = item
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
}


def aks_audit_row(event: dict[str, Any]) -> dict[str, Any]:
    """A row of Azure Monitor's AKSAudit (and AKSAuditAdmin) table: string columns hold the
    Event's scalars, empty when absent (a KQL string is never null), dynamic columns its
    objects and arrays, null when absent. The Event has no impersonation column there."""
    row: dict[str, Any] = {col: event.get(key) or "" for col, key in AKS_AUDIT_STRINGS.items()}
    row |= {col: event.get(key) for col, key in AKS_AUDIT_DYNAMICS.items()}
    return row
