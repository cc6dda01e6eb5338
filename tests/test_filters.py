"""Environment and organisation filters as a SOC adds them: applied once, to the rule they
name, refused when pySigma would silently ignore them; replay takes --env too."""

from __future__ import annotations

import json
import shutil

import pytest
from cases import ENV_EVENTS, EVENTS
from conftest import RULE_STEM, one_error_line, rule_alerts, run, snapshot

from convert import ROOT, TARGETS, environments

EKS_FILTER = "sigma/filters/eks/eks_control_plane_identities.yml"


def test_every_environment_has_filters_and_events() -> None:
    envs = environments()
    assert envs == ["aks", "calico", "eks", "gke", "openshift"]
    for env in envs:
        assert list((ENV_EVENTS / env).glob("nomatch_*.json")), env
        assert list((ENV_EVENTS / env).glob("match_*.json")), env


def test_several_environments_apply_each_filter_once(repo) -> None:
    """sigma-cli applies earlier --filter files again for each later one; here each once."""
    result = run(repo, "-t", "splunk", "--env", "eks", "--env", "calico", "--stdout")
    assert result.returncode == 0, result.stderr
    header = f"==> queries/splunk/eks+calico/{RULE_STEM}.spl <==\n"
    assert header in result.stdout
    query = result.stdout.split(header, 1)[1].split("\n==> ", 1)[0]
    assert query.count('"eks:*"') == 1
    assert query.count("system:serviceaccount:tigera-operator:tigera-operator") == 1


def test_a_platform_tied_target_is_converted_only_for_its_environment(repo) -> None:
    result = run(repo, "--env", "eks", "--stdout")
    assert "queries/cloudwatch-eks/eks/" in result.stdout
    assert "sentinel-aksaudit" not in result.stdout and "elastic-gke" not in result.stdout


def test_a_filter_with_another_logsource_is_an_error(repo) -> None:
    path = repo / EKS_FILTER
    path.write_text(path.read_text().replace("  service: audit\n", "  service: apiserver\n"))
    line = one_error_line(run(repo, "--env", "eks", "--stdout"))
    assert EKS_FILTER in line and "logsource" in line and "would ignore it" in line


def test_a_filter_naming_an_unknown_rule_is_an_error(repo) -> None:
    path = repo / EKS_FILTER
    path.write_text(
        path.read_text().replace("6f2b7a6e-3d1c-4c8e-9b7a-2e4f5d8c1a90", "no-such-rule")
    )
    line = one_error_line(run(repo, "--env", "eks", "--stdout"))
    assert EKS_FILTER in line and "'no-such-rule'" in line


def test_an_org_filter_applies_to_every_query(repo) -> None:
    """Every query of the rule it names: the rule alone and each environment, every target."""
    example = ROOT / "examples" / "org-filters" / "org_ci_deployer.yml"
    shutil.copy(example, repo / "sigma" / "filters" / "org" / example.name)
    assert run(repo).returncode == 0
    files = [p for t in TARGETS for p in (repo / "queries" / t.name).rglob(f"{RULE_STEM}.*")]
    expected = sum(len(t.variants()) for t in TARGETS)
    without = [str(p) for p in files if "deployer" not in p.read_text()]
    assert len(files) == expected and without == []
    # it names the minting correlations' base rules too, not the stolen-token rule's (a
    # minter trusted to mint is not trusted to use a stolen token)
    every = [p for t in TARGETS for p in (repo / "queries" / t.name).rglob("*") if p.is_file()]
    stolen = [p for p in every if "pod_token_used_from_another_place" in p.name]
    minting = [
        p
        for p in every
        if any(name in p.name for name in ("minting_burst", "probe_then_mint", "minted_then_used"))
    ]
    assert stolen and minting
    assert all("deployer" in p.read_text() for p in minting)
    assert not any("deployer" in p.read_text() for p in stolen)


def events_in(folder, pattern: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(pattern))]


@pytest.mark.parametrize("env", environments())
def test_replay_with_an_environment_is_quiet_on_its_platform_and_alerts_on_attacks(
    repo, env: str
) -> None:
    quiet = events_in(ENV_EVENTS / env, "nomatch_*.json")
    attacks = events_in(EVENTS, "match_*.json") + events_in(ENV_EVENTS / env, "match_*.json")
    log = repo / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in quiet + attacks))
    with_env = run(repo, "replay", "--env", env, str(log))
    alone = run(repo, "replay", str(log))
    assert with_env.returncode == alone.returncode == 0

    def ids(out: str) -> set[str]:  # the TokenRequest rule's alerts (a fork has more rules)
        return {alert["auditID"] for alert in rule_alerts(out)}

    assert ids(with_env.stdout) == {e["auditID"] for e in attacks}
    assert ids(alone.stdout) == {e["auditID"] for e in attacks + quiet}


def test_the_example_org_filter_trusts_only_what_it_names(repo) -> None:
    example = ROOT / "examples" / "org-filters" / "org_ci_deployer.yml"
    shutil.copy(example, repo / "sigma" / "filters" / "org" / example.name)
    template = json.loads((EVENTS / "match_human_user_kubectl_create_token.json").read_text())
    cases = {
        "ci_mints_for_deploy_in_shop": ("shop", "deploy", False),
        "ci_mints_for_deploy_in_payments": ("payments", "deploy", False),
        "ci_mints_for_another_service_account": ("shop", "admin", True),
        "ci_mints_in_another_namespace": ("kube-system", "deploy", True),
    }
    events = []
    for name, (namespace, account, _) in cases.items():
        event = json.loads(json.dumps(template))
        event["auditID"] = name
        event["user"]["username"] = "system:serviceaccount:ci:deployer"
        event["objectRef"].update(namespace=namespace, name=account)
        events.append(event)
    log = repo / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = run(repo, "replay", str(log))
    alerted = {alert["auditID"] for alert in rule_alerts(result.stdout)}
    assert alerted == {name for name, (_, _, alerts) in cases.items() if alerts}


@pytest.mark.parametrize("env", ["mars"])
def test_convert_with_an_unknown_environment_is_one_clear_line(repo, env: str) -> None:
    line = one_error_line(run(repo, "--env", env))
    assert f"unknown environment '{env}'" in line and "aks" in line


# --- filters that would change the rule's meaning, and input that used to end in a traceback


def org_filter(repo, body: str, name: str = "org_test.yml") -> str:
    """Write an organisation filter for the token rule with this `filter:` body."""
    path = repo / "sigma" / "filters" / "org" / name
    path.write_text(
        "title: Test filter\nid: 3c4d5e6f-7081-4a9b-8c0d-1e2f3a4b5c6d\nstatus: test\n"
        "logsource:\n  product: kubernetes\n  service: audit\nfilter:\n  rules:\n"
        "    - kubernetes_serviceaccount_token_requested\n" + body
    )
    return f"sigma/filters/org/{name}"


def test_a_filter_that_is_not_an_exclusion_is_refused(repo) -> None:
    """Without `not`, pySigma ANDs the selection to the rule: it would alert only on it."""
    before = snapshot(repo / "queries")
    path = org_filter(repo, "  selection:\n    user.username: ci\n  condition: selection\n")
    line = one_error_line(run(repo))
    assert path in line and "not an exclusion" in line and "alert only on" in line
    assert snapshot(repo / "queries") == before


@pytest.mark.parametrize(
    "selection",
    ["user.username: '*'", "user.username|contains: ''", "user.username|startswith: '*'"],
)
def test_a_filter_value_matching_every_user_is_refused(repo, selection: str) -> None:
    path = org_filter(repo, f"  selection:\n    {selection}\n  condition: not selection\n")
    line = one_error_line(run(repo))
    assert path in line and "matches every value" in line


@pytest.mark.parametrize("selection", ["user.username|cased: ci-bot", "user.username|exists: true"])
def test_an_unsupported_modifier_is_one_clear_line(repo, selection: str) -> None:
    org_filter(repo, f"  selection:\n    {selection}\n  condition: not selection\n")
    line = one_error_line(run(repo))
    assert line.startswith("convert.py: ") and "target " in line and "Traceback" not in line


def test_yaml_aliases_are_refused_before_they_expand(repo) -> None:
    """Each level of aliases multiplies the values by nine once expanded (an alias bomb; five
    levels here, harmless even where it would expand): refused before anything is built."""
    levels = ["  a0: &a0 [ci, ci, ci, ci, ci, ci, ci, ci, ci]\n"]
    for n in range(1, 5):
        levels.append(f"  a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]\n")
    path = org_filter(
        repo, "".join(levels) + "  selection:\n    user.username: *a4\n  condition: not selection\n"
    )
    line = one_error_line(run(repo))
    assert path in line and "alias *a0 at line 11" in line
