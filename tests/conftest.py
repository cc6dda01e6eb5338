from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULE_STEM = "credential_access_kubernetes_serviceaccount_token_requested"


@pytest.fixture(scope="session")
def token_rule() -> Any:
    """The TokenRequest rule, as convert.py loads it."""
    from convert import load_rules, rule_stem, sigma_rules

    (rule,) = [r for r in sigma_rules(load_rules()) if rule_stem(r) == RULE_STEM]
    return rule


@pytest.fixture(scope="session")
def generated() -> dict[Path, str]:
    """Every query file as convert.py generates it now (not as committed)."""
    from convert import TARGETS, render

    return render(TARGETS)


@pytest.fixture(scope="session")
def query_for(generated: dict[Path, str]):
    from convert import QUERIES_DIR, TARGETS_BY_NAME

    def query(target: str, variant: tuple[str, ...] | None = None, stem: str = RULE_STEM) -> str:
        """The target's query for these environments; by default its first variant (the
        rule alone, or a platform-tied target's own environment)."""
        t = TARGETS_BY_NAME[target]
        variant = t.variants()[0] if variant is None else variant
        path = QUERIES_DIR / t.name / "+".join(variant) / f"{stem}.{t.extension}"
        return generated[path].rstrip("\n")

    return query


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


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]
