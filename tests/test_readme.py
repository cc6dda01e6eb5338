"""The README says what the code does: its table of mapping sources is the targets' own."""

from __future__ import annotations

from pathlib import Path

from convert import TARGETS

README = Path(__file__).resolve().parent.parent / "README.md"
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
