"""ATT&CK names come from maintained packages through scripts/attack_names.py, never a table
kept by hand: the committed file is what the script generates, and a technique the data does
not name yet is shown by its id instead of stopping conversion."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT, one_error_line, run

from k8s_audit_detect.artifacts import ATTACK_NAMES

RULE = Path("sigma/rules/credential_access_kubernetes_serviceaccount_token_requested.yml")
KIBANA_RULE = Path("queries/kibana-kubernetes") / f"{RULE.stem}.ndjson"


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "attack_names", ROOT / "scripts" / "attack_names.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_names_are_what_the_script_generates() -> None:
    assert ATTACK_NAMES.read_text(encoding="utf-8") == script().generate()


def test_the_names_say_where_they_come_from_and_cover_the_enterprise_tactics() -> None:
    names = json.loads(ATTACK_NAMES.read_text(encoding="utf-8"))
    assert names["techniques_source"].startswith("pySigma-backend-databricks 0.1.7: ")
    assert names["tactics_source"].startswith("pysigma-backend-sumologic 0.2.5: ")
    assert names["tactics"]["credential-access"] == {"id": "TA0006", "name": "Credential Access"}
    assert names["tactics"]["command-and-control"]["id"] == "TA0011"
    assert len(names["tactics"]) == 14
    # every technique id SigmaHQ's Kubernetes audit rules tag
    for technique in ("T1078", "T1552.007", "T1498", "T1070", "T1609", "T1611", "T1036.005"):
        assert names["techniques"][technique]
    assert names["techniques"]["T1609"] == "Container Administration Command"


def test_a_source_that_moved_stops_the_script_with_one_line(monkeypatch, capsys) -> None:
    module = script()
    monkeypatch.setattr(module, "TECHNIQUES", (module.TECHNIQUES[0], "sigma/gone.json"))
    assert module.main(["--check"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "pySigma-backend-databricks 0.1.7 no longer ships sigma/gone.json" in line


def test_a_table_that_changed_shape_stops_the_script(monkeypatch) -> None:
    module = script()
    monkeypatch.setattr(module, "TACTICS_TABLE", "NO_SUCH_TABLE")
    with pytest.raises(module.SourceError, match="has no dict NO_SUCH_TABLE"):
        module.generate()


def tag(repo: Path, *tags: str) -> None:
    rule = repo / RULE
    text = rule.read_text()
    rule.write_text(text.replace("tags:\n", "tags:\n" + "".join(f"  - {t}\n" for t in tags), 1))


def test_an_unknown_technique_is_shown_by_its_id_and_conversion_goes_on(repo: Path) -> None:
    tag(repo, "attack.t1609", "attack.t9999.001", "attack.g0139")
    result = run(repo)
    assert result.returncode == 0, result.stderr
    (line,) = (repo / KIBANA_RULE).read_text().splitlines()
    (threat,) = json.loads(line)["threat"]
    named = {t["id"]: t["name"] for t in threat["technique"]}
    subs = {s["id"]: s["name"] for t in threat["technique"] for s in t["subtechnique"]}
    assert named["T1609"] == "Container Administration Command"
    assert named["T9999"] == "T9999" and subs["T9999.001"] == "T9999.001"
    card = (repo / "queries" / "cards" / f"{RULE.stem}.md").read_text()
    assert "- T9999.001 T9999.001\n" in card and "G0139" not in card


def test_an_unknown_tactic_is_one_line_naming_the_rule(repo: Path) -> None:
    tag(repo, "attack.credential-acess")
    line = one_error_line(run(repo))
    assert str(RULE) in line and "attack.credential-acess" in line and "fix the tag" in line
