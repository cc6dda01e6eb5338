"""Where the project's parts live: the repository this package sits in."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "sigma" / "rules"
FILTERS_DIR = ROOT / "sigma" / "filters"
PIPELINES_DIR = ROOT / "pipelines"
QUERIES_DIR = ROOT / "queries"
TRIAGE_DIR = ROOT / "triage"
