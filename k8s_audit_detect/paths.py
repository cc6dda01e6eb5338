"""Where the project's parts live.

A project is a directory with the Sigma rules in sigma/rules/, filters in sigma/filters/, the
pipelines in pipelines/, triage guides in triage/ and the generated queries/. By default it
is the checkout this package sits in (what `python convert.py` uses); the installed command
`k8s-audit-detect` uses the project in the current directory or the nearest one above it
(`use(find_project(Path.cwd()))`, once, before anything is loaded). A project without a
pipelines/ folder of its own uses the pipelines installed with this package.

Read the paths as attributes of this module (`paths.RULES_DIR`) where they are used, not
imported by name, so that `use` reaches them.
"""

from __future__ import annotations

from pathlib import Path

from k8s_audit_detect import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
# The pipelines installed with the package (package data, see pyproject.toml); in a checkout
# they are the repository's top-level pipelines/.
INSTALLED_PIPELINES_DIR = PACKAGE_DIR / "pipelines"

ROOT = PACKAGE_DIR.parent
RULES_DIR = ROOT / "sigma" / "rules"
FILTERS_DIR = ROOT / "sigma" / "filters"
PIPELINES_DIR = ROOT / "pipelines"
QUERIES_DIR = ROOT / "queries"
TRIAGE_DIR = ROOT / "triage"


def use(root: Path) -> None:
    """Point every path at the project in root."""
    global ROOT, RULES_DIR, FILTERS_DIR, PIPELINES_DIR, QUERIES_DIR, TRIAGE_DIR
    ROOT = root.resolve()
    RULES_DIR = ROOT / "sigma" / "rules"
    FILTERS_DIR = ROOT / "sigma" / "filters"
    PIPELINES_DIR = ROOT / "pipelines"
    if not PIPELINES_DIR.is_dir():
        PIPELINES_DIR = bundled_pipelines_dir()
    QUERIES_DIR = ROOT / "queries"
    TRIAGE_DIR = ROOT / "triage"


def bundled_pipelines_dir() -> Path:
    """The pipelines that came with this package: installed as package data, or the
    checkout's pipelines/ when the package runs from a checkout."""
    if INSTALLED_PIPELINES_DIR.is_dir():
        return INSTALLED_PIPELINES_DIR
    return PACKAGE_DIR.parent / "pipelines"


def find_project(start: Path) -> Path:
    """The directory at or above start that has sigma/rules/: the project to work on."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "sigma" / "rules").is_dir():
            return folder
    raise UserError(
        f"no project in {start} or above it (a project has its Sigma rules in sigma/rules/); "
        "run it inside your detection repository"
    )
