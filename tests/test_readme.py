"""The README says what the code does: its table of mapping sources is the targets' own, and
its sigma-cli commands are convert.py's own and give the committed queries."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import installed_env

from convert import QUERIES_DIR, TARGETS, TARGETS_BY_NAME, sigma_cli_commands

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SIGMA_CLI_MARKER = (
    "<!-- sigma-cli: kept equal to `python convert.py --sigma-cli` by tests/test_readme.py -->"
)
MARKER = (
    "<!-- mapping-sources: kept equal to k8s_audit_detect/targets.py's TARGETS by "
    "tests/test_readme.py -->"
)


def test_readme_mapping_sources_are_the_targets_own() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(MARKER) + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("| `"):
            break
        rows.append(line)
    expected = [f"| `{t.name}` | {t.source} | {t.unverified or '-'} |" for t in TARGETS]
    assert rows == expected


def readme_sigma_cli_block() -> list[str]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(SIGMA_CLI_MARKER) + 1
    assert lines[start] == "```sh"
    end = lines.index("```", start + 1)
    return lines[start + 1 : end]


def readme_sigma_cli_commands() -> dict[str, str]:
    """{target: command} as the README shows them (each after a `# <target>: ...` line)."""
    lines = readme_sigma_cli_block()
    commands = {}
    for comment, command in zip(lines[::2], lines[1::2], strict=True):
        commands[comment.removeprefix("# ").split(":")[0]] = command
    return commands


def test_readme_sigma_cli_commands_are_what_convert_prints() -> None:
    assert readme_sigma_cli_block() == sigma_cli_commands(TARGETS).splitlines()


@pytest.mark.parametrize("target", list(readme_sigma_cli_commands()))
def test_readme_sigma_cli_command_gives_the_committed_query(target: str, installed) -> None:
    """Run as the README shows it, with the package installed (not the checkout's code)."""
    command = shlex.split(readme_sigma_cli_commands()[target])
    assert command[:2] == ["sigma", "convert"]
    sigma = str(Path(sys.executable).with_name("sigma"))
    result = subprocess.run(
        [sigma, *command[1:]],
        cwd=ROOT,
        env=installed_env(installed),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    t = TARGETS_BY_NAME[target]
    folder = QUERIES_DIR / t.name / "+".join(t.variants()[0])
    plain = [p for p in sorted(folder.glob(f"*.{t.extension}")) if "correlation_" not in p.name]
    committed = [p.read_text().rstrip("\n") for p in plain]
    assert committed
    assert result.stdout.rstrip("\n") == "\n".join(committed)


CORRELATION_MARKER = (
    "<!-- correlation-support: kept equal to k8s_audit_detect/targets.py's TARGETS by "
    "tests/test_readme.py -->"
)


def test_readme_correlation_support_is_the_targets_own() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(CORRELATION_MARKER) + 3  # the header and its rule line
    rows = []
    for line in lines[start:]:
        if not line.startswith("| `"):
            break
        rows.append(line)
    expected = []
    for target in TARGETS:
        support = target.correlation_support()
        can = [feature for feature, why in support.items() if not why]
        if not can:
            expected.append(f"| `{target.name}` | none | {next(iter(support.values()))} |")
            continue
        cannot = "; ".join(f"{feature}: {why}" for feature, why in support.items() if why)
        expected.append(f"| `{target.name}` | {', '.join(can)} | {cannot or '-'} |")
    assert rows == expected
