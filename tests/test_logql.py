"""LogQL has no engine here: every emitted LogQL query must parse with Grafana's own grammar
(@grafana/lezer-logql, installed by scripts/test with `npm ci --prefix tests/logql`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from engines import require

LOGQL = Path(__file__).resolve().parent / "logql"


def parse(queries: list[str]) -> list[str]:
    node = require("node", "nodejs npm")
    assert (LOGQL / "node_modules" / "@grafana" / "lezer-logql").is_dir(), (
        "Grafana's LogQL grammar is missing: npm ci --prefix tests/logql (or run scripts/test)"
    )
    result = subprocess.run(
        [node, "parse.mjs"],
        cwd=LOGQL,
        input="\n".join(queries) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_emitted_logql_parses(query_for) -> None:
    assert parse([query_for("loki")]) == ["ok"]


def test_the_grammar_rejects_broken_logql() -> None:
    """The check can fail: a filter cut off mid-expression is reported."""
    (verdict,) = parse(['{job="kubernetes-audit"} | json | verb=~ and ('])
    assert verdict.startswith("error")
