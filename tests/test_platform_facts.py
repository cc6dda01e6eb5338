"""What the platforms really store, as their vendors define it, and what the queries do with
it: the cases where a platform's shape changes the answer, each executed on an engine."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cases import load_cases, raw_event
from engines import azurediagnostics_results, lucene_runner
from shapes import (
    aks_diagnostic_records,
    elastic_kubernetes_gke_pubsub,
    elastic_kubernetes_types,
    gke_cloud_audit_log,
)

from convert import TARGETS_BY_NAME

ROOT = Path(__file__).resolve().parent.parent
TOKEN_REQUESTS = [raw_event(c) for c in load_cases() if c.label.startswith("match_")]


def test_azurediagnostics_alerts_once_per_request_from_both_audit_categories(query_for) -> None:
    """A cluster that sends kube-audit and kube-audit-admin logs each TokenRequest twice, with
    one auditID: the query returns it once."""
    assert all(len(aks_diagnostic_records(e)) == 2 for e in TOKEN_REQUESTS)
    results = azurediagnostics_results(query_for("sentinel-azurediagnostics"), TOKEN_REQUESTS)
    twice = sorted(case for case, n in Counter(results).items() if n > 1)
    assert not twice, f"two alerts for one request: {twice}"
    assert Counter(results) == Counter(e["auditID"] for e in TOKEN_REQUESTS)


def gke_through_kubernetes_integration(event: dict) -> dict | None:
    record = gke_cloud_audit_log(event)
    return None if record is None else elastic_kubernetes_gke_pubsub(record)


def test_gke_records_in_the_kubernetes_integration_are_not_covered(query_for, tmp_path) -> None:
    """GKE records collected by the Kubernetes integration's GCP Pub/Sub input keep their
    Cloud Audit Log form, unsearchable there: the elastic-lucene query cannot fire on them,
    and --list and the README say so, sending GKE users to the GCP integration's targets."""
    run = lucene_runner(gke_through_kubernetes_integration, elastic_kubernetes_types)
    assert run(query_for("elastic-lucene"), None, TOKEN_REQUESTS, tmp_path) == set()
    assert "not its GKE Pub/Sub input" in TARGETS_BY_NAME["elastic-lucene"].data_source
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "GKE Pub/Sub input" in readme
