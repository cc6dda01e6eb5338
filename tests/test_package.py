"""The package as a user installs it (`pip install .`, or pipx): the console script does what
convert.py does on the project in the current directory, and sigma-cli finds every target's
pipeline chain by name. Run from folders that hold no code of the checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cases import EVENTS
from conftest import ROOT, installed_env, rule_alerts, snapshot

from convert import TARGETS

SIGMA_CLI = Path(sys.executable).with_name("sigma")
RULE = "sigma/rules/credential_access_kubernetes_serviceaccount_token_requested.yml"


def console(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(site / "bin" / "k8s-audit-detect"), *args],
        cwd=cwd,
        env=installed_env(site),
        capture_output=True,
        text=True,
        timeout=300,
    )


def sigma(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SIGMA_CLI), *args],
        cwd=cwd,
        env=installed_env(site),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(repo: Path) -> Path:
    """A project as a user of the installed package has it: rules, filters, triage guides
    and queries, but no convert.py, no package and no pipelines/ (the installed ones serve)."""
    (repo / "convert.py").unlink()
    shutil.rmtree(repo / "k8s_audit_detect")
    shutil.rmtree(repo / "pipelines")
    return repo


def test_the_package_holds_its_pipelines_attack_names_and_plugin_modules(installed: Path) -> None:
    package = installed / "k8s_audit_detect"
    assert sorted(p.name for p in (package / "pipelines").glob("*.yml")) == sorted(
        p.name for p in (ROOT / "pipelines").glob("*.yml")
    )
    assert (package / "attack.json").is_file()
    assert (installed / "sigma" / "pipelines" / "k8s_audit_detect" / "__init__.py").is_file()
    assert (installed / "sigma" / "backends" / "k8s_audit_detect" / "__init__.py").is_file()
    # pySigma's own packages stay namespace packages: nothing installed at their roots
    assert not (installed / "sigma" / "__init__.py").exists()
    assert not (installed / "sigma" / "pipelines" / "__init__.py").exists()


def test_the_console_script_checks_converts_and_replays_the_current_project(
    installed: Path, project: Path
) -> None:
    checked = console(installed, project, "--check")
    assert checked.returncode == 0, checked.stderr
    assert "k8s-audit-detect --check:" in checked.stderr and "up to date" in checked.stderr
    before = snapshot(project / "queries")
    (project / "queries" / "splunk" / "stale.spl").write_text("x\n")
    written = console(installed, project / "sigma" / "rules", "-t", "splunk", "-t", "duckdb")
    assert written.returncode == 0, written.stderr
    assert "queries/splunk/" in written.stdout
    rewritten = console(installed, project)  # the whole run prunes what no rule generates
    assert rewritten.returncode == 0, rewritten.stderr
    assert snapshot(project / "queries") == before
    attack = json.loads((EVENTS / "match_human_user_kubectl_create_token.json").read_text())
    log = project / "audit.log"
    log.write_text(json.dumps(attack) + "\n")
    replayed = console(installed, project, "replay", str(log))
    assert replayed.returncode == 0, replayed.stderr
    (alert,) = rule_alerts(replayed.stdout)  # the TokenRequest rule's (a fork has more rules)
    assert alert["auditID"] == attack["auditID"]


def test_the_console_script_outside_a_project_is_one_clear_line(
    installed: Path, tmp_path: Path
) -> None:
    result = console(installed, tmp_path, "--check")
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert line.startswith("k8s-audit-detect: no project in ")
    assert "sigma/rules/" in line


def test_the_console_script_uses_a_project_s_own_pipelines(installed: Path, repo: Path) -> None:
    """A fork that edits a pipeline gets its edit, not the installed pipeline."""
    (repo / "convert.py").unlink()
    shutil.rmtree(repo / "k8s_audit_detect")
    splunk = repo / "pipelines" / "splunk_kubernetes_audit.yml"
    splunk.write_text(splunk.read_text().replace("`kube_audit`", "`my_audit`"))
    result = console(installed, repo, "-t", "splunk", "--stdout")
    assert result.returncode == 0, result.stderr
    assert "`my_audit`" in result.stdout and "`kube_audit`" not in result.stdout


def test_sigma_cli_lists_every_target_s_pipeline_chain(installed: Path, tmp_path: Path) -> None:
    result = sigma(installed, tmp_path, "list", "pipelines")
    assert result.returncode == 0, result.stderr
    for target in TARGETS:
        row = next(
            line for line in result.stdout.splitlines() if f" {target.sigma_cli_pipeline} " in line
        )
        assert f" {target.backend} " in row
    assert result.stdout.count("| k8s_audit_") == len(TARGETS)


def test_sigma_cli_converts_with_the_installed_chain(installed: Path, tmp_path: Path) -> None:
    """The full chain: lucene_exact_values.yml after the Elastic mapping (escapes a tab)."""
    rule = (ROOT / RULE).read_text().replace("verb: create", 'verb: "cre\\tate"')
    (tmp_path / "rule.yml").write_text(rule)
    result = sigma(
        installed, tmp_path, "convert", "-t", "lucene", "-p", "k8s_audit_elastic_lucene", "rule.yml"
    )
    assert result.returncode == 0, result.stderr
    assert "kubernetes.audit.verb:cre\\\tate" in result.stdout


def test_sigma_cli_refuses_a_chain_for_another_backend(installed: Path, tmp_path: Path) -> None:
    shutil.copy(ROOT / RULE, tmp_path / "rule.yml")
    result = sigma(
        installed, tmp_path, "convert", "-t", "splunk", "-p", "k8s_audit_elastic_lucene", "rule.yml"
    )
    assert result.returncode != 0
    assert "not intended to be used with the target splunk" in result.stderr
