"""Policy over every rule: valid Sigma (sigma check, offline) and the metadata a SOC needs.
Each test collects every violation and fails once with the whole list."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIGMA_CLI = Path(sys.executable).with_name("sigma")
TRIAGE_FIELDS = {
    "user.username",
    "sourceIPs",
    "userAgent",
    "objectRef.namespace",
    "objectRef.name",
    "responseStatus.code",
    "impersonatedUser.username",
}


@pytest.fixture(scope="module")
def rules():
    """Every rule: the plain ones, the correlation rules and their base rules."""
    from convert import load_rules

    return list(load_rules().rules)


def test_sigma_check_passes_offline_with_sigmahq_validators() -> None:
    """The rules, the environment filters and the example organisation filters."""
    result = subprocess.run(
        [
            str(SIGMA_CLI),
            "check",
            "--fail-on-issues",
            "-c",
            "tests/sigma-validation.yml",
            "sigma/",
            "examples/org-filters/",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Found 0 errors, 0 condition errors and 0 issues" in result.stdout


def test_rule_metadata(rules) -> None:
    problems = []
    ids = [str(rule.id) for rule in rules]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate rule ids: {ids}")
    for rule in rules:
        name = Path(rule.source.path).name
        if not rule.name or not re.fullmatch(r"[a-z0-9_]+", rule.name):
            problems.append(f"{name}: needs `name` in snake_case (Splunk's `<name>_filter` macro)")
        for attribute in ("id", "status", "description", "references", "falsepositives", "level"):
            if not getattr(rule, attribute):
                problems.append(f"{name}: missing {attribute}")
        tags = {f"{t.namespace}.{t.name}" for t in rule.tags}
        if not any(t.startswith("attack.t") for t in tags):
            problems.append(f"{name}: no ATT&CK technique tag")
        if not any(re.fullmatch(r"attack\.[a-z-]+", t) for t in tags):
            problems.append(f"{name}: no ATT&CK tactic tag")
        # a rule that alerts on events lists what a triager needs (a correlation's base rule
        # lists what its correlation's alert carries)
        missing = TRIAGE_FIELDS - set(rule.fields or [])
        if getattr(rule, "_output", False) and not hasattr(rule, "timespan") and missing:
            problems.append(f"{name}: `fields` lacks {sorted(missing)}")
        if not re.match(
            r"(correlation_)?(credential_access|persistence|privilege_escalation|"
            r"lateral_movement)_",
            name,
        ):
            problems.append(f"{name}: file name should start with its ATT&CK tactic")
        if name.startswith("correlation_") != (
            hasattr(rule, "timespan") or not getattr(rule, "_output", True)
        ):
            problems.append(f"{name}: correlation_ files hold a correlation and its base rules")
    assert problems == []


def test_token_rule_tags(token_rule) -> None:
    tags = {f"{t.namespace}.{t.name}" for t in token_rule.tags}
    assert tags == {"attack.credential-access", "attack.t1528", "attack.t1552.007"}


def test_no_python_under_sigma() -> None:
    """pySigma's `sigma` is a namespace package: Python files here would join it."""
    assert [p for p in (ROOT / "sigma").rglob("*") if p.suffix in {".py", ".pyc"}] == []
