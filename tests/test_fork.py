"""A fork stays green. A copy of the repository gets what a detection team adds when it forks:
the example organisation filter copied into sigma/filters/org/ (as the README says) and a rule
of its own with its triage guide (tests/data/fork/); it regenerates queries/, and then
`convert.py --check` and the suite's tests that pin or read the generated output pass there,
run as a user runs them (`python -m pytest`).

Left out of that run, to bound its time (about a minute and a half): AppInspect and the
engine runs of hostile filter values, which select the rule as the tests kept here do (they
run in the suite itself), and test_engines.py, whose labelled events are the shipped rule's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, RULE_STEM, one_error_line, run, snapshot

FORK = Path(__file__).resolve().parent / "data" / "fork"
EXAMPLE = ROOT / "examples" / "org-filters" / "org_ci_deployer.yml"
(FORK_RULE,) = sorted((FORK / "rules").glob("*.yml"))
# The test files that pin this repository's queries or read the generated output, and those
# that failed in a fork before (counting rules, taking the first file of a folder).
CHECKS = [
    "tests/test_golden.py",
    "tests/test_pipelines.py",
    "tests/test_readme.py",
    "tests/test_artifacts.py",
    "tests/test_logql.py",
    "tests/test_rules.py",
    "tests/test_convert_cli.py",
    "tests/test_filters.py",
    "tests/test_package.py",
    "tests/test_cli_robustness.py",
    "tests/test_org_filters.py",
]
# Engine runs of hostile filter values: the same rule selection as the pinned Splunk string and
# the Lucene refusals, which do run here
NOT_FORK_DEPENDENT = " and ".join(
    f"not {name}"
    for name in ("appinspect", "generated_values", "tabs_line_breaks", "match_literally")
)
# What is not the repository: local state, caches, build output (.gitignore's)
IGNORED = (".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache")
IGNORED += (".hypothesis", "node_modules", "bench-data", "build", "*.egg-info")


def fork_of_the_repository(tmp: Path) -> Path:
    """The repository copied, with the example org filter and the fork's rule added."""
    fork = tmp / "fork"
    shutil.copytree(ROOT, fork, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    grammar = ROOT / "tests" / "logql" / "node_modules"
    if grammar.exists():  # scripts/test's npm packages: linked, not copied
        (fork / "tests" / "logql" / "node_modules").symlink_to(grammar.resolve())
    shutil.copy(EXAMPLE, fork / "sigma" / "filters" / "org" / EXAMPLE.name)
    shutil.copy(FORK_RULE, fork / "sigma" / "rules" / FORK_RULE.name)
    shutil.copy(FORK / "triage" / f"{FORK_RULE.stem}.md", fork / "triage")
    return fork


def test_a_fork_with_its_own_org_filter_and_rule_stays_green(tmp_path: Path) -> None:
    fork = fork_of_the_repository(tmp_path)
    assert run(fork, "--check").returncode == 1  # queries/ is the repository's: out of date
    regenerated = run(fork)
    assert regenerated.returncode == 0, regenerated.stderr
    # the filter is in the shipped rule's queries, the fork's rule has its own
    assert "ci:deployer" in (fork / "queries" / "splunk" / f"{RULE_STEM}.spl").read_text()
    assert "ci:deployer" not in (ROOT / "queries" / "splunk" / f"{RULE_STEM}.spl").read_text()
    assert (fork / "queries" / "splunk" / f"{FORK_RULE.stem}.spl").is_file()
    assert (fork / "queries" / "cards" / f"{FORK_RULE.stem}.md").is_file()
    checked = run(fork, "--check")
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
        + [f"--basetemp={tmp_path / 'pytest'}", "-k", NOT_FORK_DEPENDENT, *CHECKS],
        cwd=fork,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary

    # and a second copy of the example (saved as .yaml, same id) is refused, naming both
    before = snapshot(fork / "queries")
    twin = Path("sigma/filters/org/org_ci_deployer_copy.yaml")
    shutil.copy(EXAMPLE, fork / twin)
    line = one_error_line(run(fork))
    assert str(twin) in line and f"sigma/filters/org/{EXAMPLE.name}" in line and " id " in line
    assert snapshot(fork / "queries") == before
