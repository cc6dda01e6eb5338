"""The platform shapes the engines run on are derived from raw events by tests/shapes.py;
here they are checked against the envelopes in the corpus. Each test id says what backs it:
`real` records are exports from running clusters; `handwritten` ones are a vendor's test
cases (Panther's), which show that vendor's idea of the shape, not proof of it. Every GKE
record in the corpus is handwritten; the AKS ones are both."""

from __future__ import annotations

import json

import pytest
from cases import corpus_events, source_kind
from shapes import aks_diagnostic_record, gke_method_name, gke_resource_name

GKE = [
    (n, e)
    for n, e in enumerate(corpus_events(), start=1)
    if e.get("_format") == "gcp_cloud_logging" and e.get("objectRef")
]


def test_the_corpus_has_gke_records_to_check_against() -> None:
    assert len(GKE) >= 40


# Panther's handwritten GKE fixtures write the RBAC group as io.k8s.rbac.v1...; GKE itself
# writes io.k8s.authorization.rbac.v1... (the examples in shapes.gke_method_name's docstring).
PANTHER_RBAC = "io.k8s.rbac."


@pytest.mark.parametrize(
    ("line", "event"), GKE, ids=[f"corpus-L{n}-{source_kind(e)}" for n, e in GKE]
)
def test_gke_method_and_resource_names_match_the_corpus_records(line: int, event: dict) -> None:
    real = event["_original_envelope"]["protoPayload"]
    if real["methodName"].startswith(PANTHER_RBAC):
        expected = real["methodName"].replace(PANTHER_RBAC, "io.k8s.authorization.rbac.", 1)
        assert gke_method_name(event) == expected
    else:
        assert gke_method_name(event) == real["methodName"]
    assert gke_resource_name(event) == real.get("resourceName")


@pytest.mark.parametrize(
    ("group", "version", "resource", "subresource", "verb", "method"),
    [
        # elastic/detection-rules rules/integrations/gcp/ (GKE rules on real method names)
        ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", None, "create",
         "io.k8s.authorization.rbac.v1.clusterrolebindings.create"),
        ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", None, "create",
         "io.k8s.admissionregistration.v1.mutatingwebhookconfigurations.create"),
        ("", "v1", "serviceaccounts", "token", "create",
         "io.k8s.core.v1.serviceaccounts.token.create"),
        # GoogleCloudPlatform/khi (googlecloudlogk8saudit_contract tests)
        ("apps", "v1", "deployments", "scale", "update", "io.k8s.apps.v1.deployments.scale.update"),
        ("", "v1", "nodes", "status", "patch", "io.k8s.core.v1.nodes.status.patch"),
    ],
)  # fmt: skip
def test_gke_method_names_follow_gkes_own(
    group: str, version: str, resource: str, subresource: str | None, verb: str, method: str
) -> None:
    ref = {"apiGroup": group, "apiVersion": version, "resource": resource}
    if subresource:
        ref["subresource"] = subresource
    assert gke_method_name({"verb": verb, "objectRef": ref}) == method


AKS = [
    (n, e)
    for n, e in enumerate(corpus_events(), start=1)
    if e.get("_format") == "azure_diagnostics_kube_audit"
]


def test_the_corpus_has_aks_records_to_check_against() -> None:
    assert len(AKS) >= 50
    assert sum(source_kind(e) == "real" for _, e in AKS) >= 20


@pytest.mark.parametrize(
    ("line", "event"), AKS, ids=[f"corpus-L{n}-{source_kind(e)}" for n, e in AKS]
)
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
