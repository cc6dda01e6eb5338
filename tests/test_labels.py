"""The labels' own premises, checked without the rule, so a label cannot hide a TokenRequest."""

from __future__ import annotations

from cases import corpus_events, corpus_labels, load_cases


def is_token_request(event: dict) -> bool:
    ref = event.get("objectRef") or {}
    return (
        event.get("verb") == "create"
        and ref.get("resource") == "serviceaccounts"
        and ref.get("subresource") == "token"
    )


def test_every_unlisted_corpus_line_is_not_a_token_request() -> None:
    data = corpus_labels()
    listed = {*data["match"], *data["nomatch"]}
    wrong = [
        n
        for n, event in enumerate(corpus_events(), start=1)
        if n not in listed and is_token_request(event)
    ]
    assert not wrong, f"TokenRequests left to the default nomatch label, lines: {wrong}"


def test_every_match_label_is_a_token_request() -> None:
    wrong = [
        c.id for c in load_cases() if c.label.startswith("match_") and not is_token_request(c.event)
    ]
    assert not wrong, f"labelled match but not a create on serviceaccounts/token: {wrong}"


def test_labels_point_at_real_lines_and_ids_are_unique() -> None:
    data = corpus_labels()
    count = len(corpus_events())
    out_of_range = [n for n in (*data["match"], *data["nomatch"]) if not 1 <= n <= count]
    assert not out_of_range
    ids = [c.id for c in load_cases()]
    assert len(ids) == len(set(ids))


def test_corpus_covers_the_attack_and_near_miss_variants() -> None:
    """The hand-written cases the foundation issue asks for are all present."""
    labels = {c.label for c in load_cases()}
    needed = [
        "match_human_user_kubectl_create_token",
        "match_app_serviceaccount_mints_token_for_privileged_sa",
        "match_compromised_kube_system_workload",
        "match_impersonating_kube_controller_manager",
        "match_denied_attempt_403_forbid",
        "match_long_lived_token_one_year_unbound",
        "match_no_stage_recorded",
        "match_response_complete_of_two_stage_request",
        "nomatch_request_received_of_two_stage_request",
        "nomatch_get_on_token_subresource",
        "nomatch_create_serviceaccount_without_subresource",
        "nomatch_tokenreviews_create",
        "nomatch_kubelet_projected_token",
        "nomatch_kube_controller_manager_own_controller_token",
    ]
    assert [n for n in needed if n not in labels] == []
