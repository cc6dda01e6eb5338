"""The platform shapes the engines run on are derived from raw events by tests/shapes.py;
here they are checked against the real envelopes in the corpus, so they are not invented."""

from __future__ import annotations

import json

import pytest
from cases import corpus_events
from shapes import aks_diagnostic_record, gke_method_name, gke_resource_name

GKE = [
    (n, e)
    for n, e in enumerate(corpus_events(), start=1)
    if e.get("_format") == "gcp_cloud_logging" and e.get("objectRef")
]


def test_the_corpus_has_gke_records_to_check_against() -> None:
    assert len(GKE) >= 40


@pytest.mark.parametrize(("line", "event"), GKE, ids=[f"corpus-L{n}" for n, _ in GKE])
def test_gke_method_and_resource_names_match_the_real_records(line: int, event: dict) -> None:
    real = event["_original_envelope"]["protoPayload"]
    assert gke_method_name(event) == real["methodName"]
    assert gke_resource_name(event) == real.get("resourceName")


AKS = [
    (n, e)
    for n, e in enumerate(corpus_events(), start=1)
    if e.get("_format") == "azure_diagnostics_kube_audit"
]


def test_the_corpus_has_aks_records_to_check_against() -> None:
    assert len(AKS) >= 50


@pytest.mark.parametrize(("line", "event"), AKS, ids=[f"corpus-L{n}" for n, _ in AKS])
def test_aks_diagnostic_record_matches_the_real_envelopes(line: int, event: dict) -> None:
    """Same category and operation name; every member the real record has (but vendor
    enrichment p_*) is one ours has; properties.log round-trips to the Event."""
    real = event["_original_envelope"]
    ours = aks_diagnostic_record({k: v for k, v in event.items() if not k.startswith("_")})
    assert (ours["category"], ours["operationName"]) == (real["category"], real["operationName"])
    real_members = {k for k in real if not k.startswith("p_")}
    assert real_members - set(ours) <= {
        "Cloud",
        "Environment",
        "UnderlayClass",
        "UnderlayName",
        "ccpNamespace",
    }
    assert set(real.get("properties", {})) <= set(ours["properties"])
    assert json.loads(ours["properties"]["log"])["verb"] == event.get("verb")
