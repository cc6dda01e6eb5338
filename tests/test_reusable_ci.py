"""CI other repositories can reuse: the GitHub workflow, the pre-commit hook, and
`convert.py --check --format json` for machines."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import yaml
from conftest import ROOT, installed_env, run

RULE = Path("sigma/rules/credential_access_kubernetes_serviceaccount_token_requested.yml")


def hook() -> dict:
    (definition,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    return definition


def run_hook(repo: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """The hook's entry as pre-commit runs it: the package installed (`language: python`
    installs this repository), the command run in the user's repository."""
    command = shlex.split(hook()["entry"])
    command[0] = str(site / "bin" / command[0])
    return subprocess.run(
        command, cwd=repo, env=installed_env(site), capture_output=True, text=True, timeout=120
    )


def test_the_hook_passes_on_an_up_to_date_tree_and_fails_on_a_stale_one(repo, installed) -> None:
    definition = hook()
    assert definition["id"] == "sigma-queries-up-to-date"
    assert definition["pass_filenames"] is False
    assert definition["language"] == "python"  # no `python` on PATH needed
    assert run_hook(repo, installed).returncode == 0
    rule = repo / RULE
    rule.write_text(rule.read_text().replace("level: medium", "level: high"))
    failed = run_hook(repo, installed)
    assert failed.returncode == 1 and "is out of date" in failed.stderr


def test_check_as_json_names_what_is_out_of_date(repo) -> None:
    ok = json.loads(run(repo, "--check", "--format", "json").stdout)
    assert ok["ok"] is True and ok["checked"] > 0
    rule = repo / RULE
    rule.write_text(rule.read_text().replace("level: medium", "level: high"))
    (repo / "queries" / "splunk" / "stale.spl").write_text("x\n")
    result = run(repo, "--check", "--format", "json")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["ok"] is False
    assert "queries/splunk/stale.spl" in report["stale"]
    assert any(path.startswith("queries/kibana-kubernetes/") for path in report["changed"])
    assert report["fix"] == "run `python convert.py` and commit queries/"


def test_the_workflow_runs_ci_and_can_be_reused() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "detections.yml").read_text())
    triggers = workflow[True]  # YAML reads the key `on` as a boolean
    assert "workflow_call" in triggers and "pull_request" in triggers
    steps = workflow["jobs"]["test"]["steps"]
    assert any("bash .ci/run" in step.get("run", "") for step in steps)
