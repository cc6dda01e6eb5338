"""The README says what the code does: its table of mapping sources is the targets' own, and
its sigma-cli commands are what the command line prints for this repository's rules and give
its queries. They are checked in a project holding just what the repository ships (its rules
and environment filters), so a fork's own rules and organisation filters leave them true."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHIPPED_RULE_STEMS, installed_env

from convert import TARGETS

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


def test_readme_sigma_cli_commands_are_what_convert_prints(installed, shipped_project) -> None:
    """`--sigma-cli` (the installed command, the same code as convert.py) in the project."""
    result = subprocess.run(
        [str(installed / "bin" / "k8s-audit-detect"), "--sigma-cli"],
        cwd=shipped_project,
        env=installed_env(installed),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert readme_sigma_cli_block() == result.stdout.splitlines()


@pytest.mark.parametrize("target", list(readme_sigma_cli_commands()))
def test_readme_sigma_cli_command_gives_the_shipped_query(
    target: str, installed, shipped_project, shipped_query
) -> None:
    """Run as the README shows it, with the package installed (not the checkout's code): the
    queries convert.py generates for the shipped rules, which are the committed ones
    (test_convert_cli.py's --check) until a fork adds organisation filters."""
    command = shlex.split(readme_sigma_cli_commands()[target])
    assert command[:2] == ["sigma", "convert"]
    sigma = str(Path(sys.executable).with_name("sigma"))
    result = subprocess.run(
        [sigma, *command[1:]],
        cwd=shipped_project,
        env=installed_env(installed),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    expected = [shipped_query(target, stem=stem) for stem in sorted(SHIPPED_RULE_STEMS)]
    assert result.stdout.rstrip("\n") == "\n".join(expected)


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
