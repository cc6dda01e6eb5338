"""The platform shapes the engines run on are derived from raw events by tests/shapes.py;
here they are checked against the real envelopes in the corpus, so they are not invented."""

from __future__ import annotations

import pytest
from cases import corpus_events
from shapes import gke_method_name, gke_resource_name

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
