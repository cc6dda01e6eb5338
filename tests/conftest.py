from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULE_STEM = "credential_access_kubernetes_serviceaccount_token_requested"
# What this repository ships, which the pinned strings pin (expected strings, the README's
# sigma-cli commands, sigma-cli parity): its rules, by file name, and its environment filters.
# A fork adds rules to sigma/rules/ and filters to sigma/filters/org/; those pins hold there
# unchanged, and the behaviour tests run the fork's rules and filters too (tests/test_fork.py).
SHIPPED_RULE_STEMS = (RULE_STEM,)
# The correlation rules this repository ships (each file holds its base rules too; the
# environment filters name the minting ones)
SHIPPED_CORRELATION_STEMS = (
    "correlation_credential_access_kubernetes_serviceaccount_token_minted_then_used",
    "correlation_credential_access_kubernetes_serviceaccount_token_minting_burst",
    "correlation_credential_access_kubernetes_serviceaccount_token_probe_then_mint",
    "correlation_lateral_movement_kubernetes_pod_token_used_from_another_place",
)
TOKEN_RULE_ID = "6f2b7a6e-3d1c-4c8e-9b7a-2e4f5d8c1a90"  # the TokenRequest rule's Sigma id


@pytest.fixture(scope="session", autouse=True)
def conversion_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Replay's conversion cache (k8s_audit_detect/conversion_cache.py) in a folder of the
    test session's, for it and the processes it starts: the user's ~/.cache is left alone."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder / "k8s-audit-detect"


@pytest.fixture(scope="session")
def token_rule() -> Any:
    """The TokenRequest rule, as convert.py loads it."""
    from convert import load_rules, rule_stem, sigma_rules

    (rule,) = [r for r in sigma_rules(load_rules()) if rule_stem(r) == RULE_STEM]
    return rule


@pytest.fixture(scope="session")
def all_rules() -> list[Any]:
    """Every plain rule in sigma/rules/ (a fork's too), as convert.py loads them; not a
    correlation's base rules (they have no queries of their own) nor the correlation rules
    (tests/test_correlations.py and the correlation tests of test_artifacts.py)."""
    from convert import load_rules, sigma_rules

    return [rule for rule in sigma_rules(load_rules()) if rule._output]


@pytest.fixture(scope="session")
def correlation_rules() -> list[Any]:
    """The correlation rules in sigma/rules/."""
    from convert import load_rules
    from k8s_audit_detect.correlations import correlation_rules

    return correlation_rules(load_rules())


@pytest.fixture(scope="session")
def generated() -> dict[Path, str]:
    """Every query file as convert.py generates it now (not as committed): every rule, with
    the organisation's filters a fork adds."""
    from convert import TARGETS, render

    return render(TARGETS)


@pytest.fixture(scope="session")
def shipped() -> dict[Path, str]:
    """Every file as convert.py generates it without the organisation's filters: what this
    repository ships for its own rules, whatever a fork adds to sigma/filters/org/."""
    from convert import TARGETS, render

    return render(TARGETS, org=False)


def query_in(files: dict[Path, str]):
    from convert import QUERIES_DIR, TARGETS_BY_NAME

    def query(target: str, variant: tuple[str, ...] | None = None, stem: str = RULE_STEM) -> str:
        """The target's query for these environments; by default its first variant (the
        rule alone, or a platform-tied target's own environment)."""
        t = TARGETS_BY_NAME[target]
        variant = t.variants()[0] if variant is None else variant
        path = QUERIES_DIR / t.name / "+".join(variant) / f"{stem}.{t.extension}"
        return files[path].rstrip("\n")

    return query


@pytest.fixture(scope="session")
def query_for(generated: dict[Path, str]):
    """A rule's query as generated, the organisation's filters applied (behaviour tests)."""
    return query_in(generated)


@pytest.fixture(scope="session")
def shipped_query(shipped: dict[Path, str]):
    """A shipped rule's query as this repository ships it (what pinned strings pin)."""

    def query(target: str, variant: tuple[str, ...] | None = None, stem: str = RULE_STEM) -> str:
        assert stem in SHIPPED_RULE_STEMS, stem
        return query_in(shipped)(target, variant, stem)

    return query


@pytest.fixture(scope="session")
def shipped_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project holding only what this repository ships under sigma/: its rules and the
    environment filters, an empty sigma/filters/org/ (a fork's rules and filters left out)."""
    project = tmp_path_factory.mktemp("shipped")
    sigma = project / "sigma"
    shutil.copytree(
        ROOT / "sigma" / "filters",
        sigma / "filters",
        ignore=lambda folder, names: names if Path(folder).name == "org" else [],
    )
    (sigma / "rules").mkdir()
    for stem in (*SHIPPED_RULE_STEMS, *SHIPPED_CORRELATION_STEMS):
        shutil.copy2(ROOT / "sigma" / "rules" / f"{stem}.yml", sigma / "rules")
    return project


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of what convert.py needs: the script, its package, rules, pipelines, queries,
    triage guides, and the labelled events the rule cards count."""
    names = (
        "convert.py",
        "k8s_audit_detect",
        "sigma",
        "pipelines",
        "queries",
        "examples",
        "triage",
    )
    for name in (*names, "tests/data/corpus", "tests/events"):
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(source, tmp_path / name, ignore=ignore)
        else:
            shutil.copy2(source, tmp_path / name)
    return tmp_path


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as `pip install .` installs it, in a folder of its own (offline: built with
    the venv's setuptools, no dependencies fetched; they are the venv's). Built from a copy of
    what the package is made of, so the checkout stays clean; run things with
    `installed_env(...)` from a folder without the checkout's code."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "k8s_audit_detect", "pipelines"):
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    offline = ["--no-build-isolation", "--no-deps", "--no-index", "--no-cache-dir"]
    result = subprocess.run(
        [*pip, *offline, "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def installed_env(site: Path) -> dict[str, str]:
    """The environment for a process that sees the installed package, not the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return env | {"PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}


def run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "convert.py", *args], cwd=repo, capture_output=True, text=True, timeout=120
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def rule_alerts(stdout: str, rule_id: str = TOKEN_RULE_ID) -> list[dict[str, Any]]:
    """One rule's alerts in replay's output (JSON lines, every rule's, a fork's too), in order."""
    alerts = [json.loads(line) for line in stdout.splitlines()]
    return [alert for alert in alerts if alert["rule_id"] == rule_id]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]
