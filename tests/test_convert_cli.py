"""convert.py as a user runs it: on a copy of the repository, through its command line."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from cases import EVENTS
from conftest import RULE_STEM, TOKEN_RULE_ID, one_error_line, rule_alerts, run, snapshot

from convert import TARGETS
from k8s_audit_detect.rules import rule_files

ROOT = Path(__file__).resolve().parent.parent
RULE = Path("sigma/rules/credential_access_kubernetes_serviceaccount_token_requested.yml")


def test_check_passes_on_the_committed_tree() -> None:
    result = run(ROOT, "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_with_a_diff_when_the_rule_changed_without_regenerating(repo: Path) -> None:
    rule = repo / RULE
    rule.write_text(rule.read_text().replace("system:kube-controller-manager\n", "system:kcm\n"))
    result = run(repo, "--check")
    assert result.returncode == 1
    assert "-" in result.stdout and "+" in result.stdout
    assert "system:kcm" in result.stdout
    assert "run `python convert.py`" in result.stderr


def test_check_fails_on_a_hand_edited_query(repo: Path) -> None:
    spl = next((repo / "queries" / "splunk").iterdir())
    spl.write_text(spl.read_text().replace("kube_audit", "my_audit"))
    result = run(repo, "--check")
    assert result.returncode == 1
    assert "my_audit" in result.stdout


def test_check_fails_on_a_query_no_rule_generates_and_regenerating_removes_it(repo: Path) -> None:
    stale = repo / "queries" / "splunk" / "deleted_rule.spl"
    stale.write_text("index=old\n")
    result = run(repo, "--check")
    assert result.returncode == 1
    assert "stale" in result.stdout and "queries/splunk/deleted_rule.spl" in result.stdout
    assert run(repo).returncode == 0
    assert not stale.exists()
    assert run(repo, "--check").returncode == 0


def test_regenerating_is_byte_stable_and_prints_what_it_wrote(repo: Path) -> None:
    before = snapshot(repo / "queries")
    result = run(repo)
    assert result.returncode == 0
    assert snapshot(repo / "queries") == before
    assert "0 changed" in result.stderr
    assert sorted(result.stdout.split()) == sorted(f"queries/{name}" for name in before)


def test_one_target_to_stdout_writes_nothing(repo: Path) -> None:
    before = snapshot(repo)
    from convert import environments

    result = run(repo, "-t", "splunk", "--stdout")
    assert result.returncode == 0
    headers = [line for line in result.stdout.splitlines() if line.startswith("==> ")]
    queries = [line for line in headers if line.startswith("==> queries/splunk/")]
    rules = rule_files(repo / "sigma" / "rules")  # this repository's, and a fork's own
    # each rule file's queries (a correlation file's: the correlation's), alone and per env
    assert len(queries) == len(rules) * (1 + len(environments()))
    token = [line for line in queries if line.endswith(f"/{RULE_STEM}.spl <==")]
    assert len(token) == 1 + len(environments())
    assert snapshot(repo) == before


def test_list_names_every_target_with_its_source_and_engine() -> None:
    """--list gives, per target, the vendor source of its mapping, what is unverified (said
    as such), and the engine that verifies it."""
    from convert import TARGETS

    result = run(ROOT, "--list")
    assert result.returncode == 0
    blocks = {b.splitlines()[0]: b for b in result.stdout.strip().split("\n\n")}
    assert set(blocks) == {t.name for t in TARGETS}
    for target in TARGETS:
        block = blocks[target.name]
        assert f"{'verified by:':<21}{target.verified_by}" in block
        assert f"{'mapping source:':<21}{target.source}" in block
        assert ("UNVERIFIED:" in block) == bool(target.unverified)
        # which Sigma correlation types (and aliases) the target expresses, why not the others
        support = target.correlation_support()
        can = [feature for feature, why in support.items() if not why]
        if can:
            assert f"{'correlations:':<21}{', '.join(can)}" in block
            assert f"{'correlations tested:':<21}{target.correlation_verified_by}" in block
            for feature, why in support.items():
                assert (f"{'no ' + feature + ':':<21}{why}" in block) == bool(why)
        else:
            assert f"{'correlations:':<21}none: " in block


def test_unknown_target_is_a_usage_error(repo: Path) -> None:
    result = run(repo, "-t", "qradar")
    assert result.returncode == 2
    assert "invalid choice: 'qradar'" in result.stderr


def test_broken_rule_yaml_is_one_clear_line_and_writes_nothing(repo: Path) -> None:
    (repo / RULE).write_text((repo / RULE).read_text().replace("detection:", "detection: [", 1))
    before = snapshot(repo / "queries")
    line = one_error_line(run(repo))
    assert str(RULE) in line and "line 28" in line and "fix the YAML" in line
    assert snapshot(repo / "queries") == before


def test_a_filter_a_later_target_refuses_fails_the_whole_run_without_half_written_output(
    repo: Path,
) -> None:
    """An organisation filter excluding the literal user `deploy*bot`: Lucene (first in the
    table) expresses it, EQL cannot (no escape for a literal star): the filter is the user's
    to fix, so the run stops in one line naming the filter, after earlier targets converted,
    and nothing is written."""
    org = repo / "sigma" / "filters" / "org" / "org_literal_star.yml"
    org.write_text(
        "title: Deploy bot\n"
        "id: 0b5b8a7e-7c1f-4f59-9a64-3d2f1a0e9c11\n"
        "logsource: {product: kubernetes, service: audit}\n"
        "filter:\n"
        "  rules: [kubernetes_serviceaccount_token_requested]\n"
        "  selection:\n"
        "    user.username: 'deploy\\*bot'\n"
        "  condition: not selection\n",
        encoding="utf-8",
    )
    before = snapshot(repo / "queries")
    line = one_error_line(run(repo))
    assert line.startswith(f"convert.py: {org.relative_to(repo)}: target "), line
    failed = re.search(r"target ([\w-]+)", line)
    assert failed, line
    assert [t.name for t in TARGETS].index(failed.group(1)) > 0  # after elastic-lucene
    assert snapshot(repo / "queries") == before


# --- replay ------------------------------------------------------------------------------


def test_replay_reports_malformed_lines_and_evaluates_the_rest(repo: Path) -> None:
    attack = json.loads((EVENTS / "match_human_user_kubectl_create_token.json").read_text())
    kubelet = json.loads((EVENTS / "nomatch_kubelet_projected_token.json").read_text())
    log = repo / "audit.log"
    log.write_text(
        "\n".join(
            [json.dumps(kubelet), '{"verb": "create", "objectRef": {', "", json.dumps(attack), "[]"]
        )
        + "\n"
    )
    result = run(repo, "replay", str(log))
    assert result.returncode == 1, result.stderr  # finished, lines skipped
    alerts = rule_alerts(result.stdout)  # the TokenRequest rule's (a fork has more rules)
    assert [(a["auditID"], a["stage"]) for a in alerts] == [(attack["auditID"], "ResponseComplete")]
    assert alerts[0]["line"] == 4
    assert alerts[0]["rule_id"] == TOKEN_RULE_ID
    assert alerts[0]["rule"] == "Kubernetes Service Account Token Requested Outside Core Components"
    assert alerts[0]["user.username"] == "alice@example.com"
    assert alerts[0]["annotations.authorization.k8s.io/decision"] == "allow"
    assert alerts[0]["sourceIPs"] == ["203.0.113.7"]
    assert f"{log}:2: malformed JSON" in result.stderr
    assert f"{log}:5: an array, not a JSON object (skipped)" in result.stderr
    assert f"{log}:3:" not in result.stderr  # a blank line is not an error
    summary = result.stderr.splitlines()
    assert "2 lines skipped" in summary[-1]
    assert f"{len(result.stdout.splitlines())} alert" in summary[-1]
    assert f"replay:         1  {alerts[0]['rule']} ({TOKEN_RULE_ID})" in summary


def test_replay_reads_gzip_and_exits_0_without_alerts(repo: Path) -> None:
    kubelet = (EVENTS / "nomatch_kubelet_projected_token.json").read_text()
    log = repo / "audit.log.gz"
    log.write_bytes(gzip.compress((json.dumps(json.loads(kubelet)) + "\n").encode()))
    result = run(repo, "replay", str(log))
    assert result.returncode == 0 and result.stdout == ""
    assert "0 alerts" in result.stderr


def test_replay_of_a_missing_file_is_one_clear_line(repo: Path) -> None:
    line = one_error_line(run(repo, "replay", "nope.log"))
    assert "nope.log: no such file" in line


def test_replay_unknown_environment_is_one_clear_line(repo: Path) -> None:
    log = repo / "audit.log"
    log.write_text("{}\n")
    line = one_error_line(run(repo, "replay", "--env", "mars", str(log)))
    assert "unknown environment 'mars'" in line


def test_replay_malformed_line_deep_in_a_large_file_alerts_once_per_event(repo: Path) -> None:
    """The bad line comes after DuckDB has streamed alerts from earlier blocks: the restart
    with errors skipped sends each alert once, in file order."""
    attack = json.loads((EVENTS / "match_human_user_kubectl_create_token.json").read_text())
    lines = []
    for n in range(40_000):
        attack["auditID"] = f"a-{n}"
        lines.append(json.dumps(attack))
    lines.insert(39_990, "{truncated")
    log = repo / "audit.log"
    log.write_text("\n".join(lines) + "\n")
    result = run(repo, "replay", str(log))
    assert result.returncode == 1, result.stderr
    ids = [alert["auditID"] for alert in rule_alerts(result.stdout)]
    assert ids == [f"a-{n}" for n in range(40_000)]
    assert f"{log}:39991: malformed JSON" in result.stderr


# --- Splunk stanza names: one per rule, on one plain line ------------------------------------


def test_two_rules_with_one_title_are_refused_not_written_as_two_stanzas(repo: Path) -> None:
    """savedsearches.conf names each alert by the rule's title: Splunk keeps one of two."""
    text = (repo / RULE).read_text()
    twin = RULE.with_name("credential_access_twin.yml")
    (repo / twin).write_text(
        text.replace(
            "6f2b7a6e-3d1c-4c8e-9b7a-2e4f5d8c1a90", "7a3c8b7f-4e2d-4d9f-8c8b-3f5a6e9d2b01"
        ).replace("name: kubernetes_serviceaccount_token_requested", "name: twin_rule")
    )
    (repo / "triage" / f"{twin.stem}.md").write_text("# Twin\n")
    before = snapshot(repo / "queries")
    line = one_error_line(run(repo))
    assert str(twin) in line and "savedsearches.conf" in line and str(RULE) in line
    assert snapshot(repo / "queries") == before


def test_a_title_with_a_carriage_return_is_refused(repo: Path) -> None:
    rule = repo / RULE
    text = rule.read_text()
    title = text.splitlines()[0]
    rule.write_text(text.replace(title, 'title: "Token requested\\r[evil]"', 1))
    line = one_error_line(run(repo))
    assert str(RULE) in line and "control character" in line


def _add_rule(repo: Path, stem: str, extra: str) -> Path:
    """A second rule: the TokenRequest rule with one more condition, its own id and name, and
    a triage guide."""
    text = (repo / RULE).read_text(encoding="utf-8")
    text = re.sub(r"(?m)^id: .*$", "id: 3f1b6f0e-5d5c-4a7e-9a43-8f7c6b1d2e10", text)
    text = re.sub(r"(?m)^name: .*$", f"name: {stem}", text)
    text = re.sub(r"(?m)^title: .*$", f"title: {stem.replace('_', ' ').capitalize()}", text)
    text = text.replace("    verb: create\n", f"    verb: create\n{extra}")
    path = repo / "sigma" / "rules" / f"{stem}.yml"
    path.write_text(text, encoding="utf-8")
    (repo / "triage" / f"{stem}.md").write_text("# Triage\n\nLook at the caller.\n")
    return path


def test_a_rule_a_platform_cannot_express_is_left_out_there_with_a_note(repo: Path) -> None:
    """GKE records a gRPC code, not the HTTP status: a rule on responseStatus.code converts
    everywhere else, and says where it does not and why, instead of stopping every target."""
    stem = "credential_access_kubernetes_token_request_denied"
    _add_rule(repo, stem, "    responseStatus.code: 403\n")
    result = run(repo)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if ": note: " in line]
    assert {line.split(" for ")[1].split(":")[0] for line in notes} == {
        "elastic-gke-lucene",
        "elastic-gke-eql",
        "elastic-gke-esql",
    }
    assert all(f"{stem}: not converted" in line and "responseStatus.code" in line for line in notes)
    queries = repo / "queries"
    assert (queries / "elastic-lucene" / f"{stem}.lucene").is_file()
    assert not list((queries / "elastic-gke-lucene").rglob(f"{stem}.*"))
    card = (queries / "cards" / f"{stem}.md").read_text(encoding="utf-8")
    assert "## Not available on\n\n- elastic-gke-lucene: field responseStatus.code" in card
    assert run(repo, "--check").returncode == 0


def test_a_rule_no_target_can_express_is_one_error_line(repo: Path) -> None:
    """responseStatus.code is a number in every audit Event: a text value matches nothing
    anywhere (SigmaHQ's enumeration rule compares it with 'ALLOW')."""
    path = _add_rule(
        repo, "discovery_status_compared_with_text", "    responseStatus.code: ALLOW\n"
    )
    before = snapshot(repo / "queries")
    line = one_error_line(run(repo))
    assert line.startswith(f"convert.py: {path.relative_to(repo)}: no target can express this rule")
    assert snapshot(repo / "queries") == before
