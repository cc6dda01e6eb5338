"""Replay's conversion cache (k8s_audit_detect/conversion_cache.py): a replay after the first
takes the converted rules from it without loading pySigma; a change to anything the conversion
reads is converted anew, and replays exactly as a replay with no cache does; a damaged or
unwritable cache costs only the time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RULE_STEM, TOKEN_RULE_ID

EVENTS = Path(__file__).resolve().parent / "events"
PYSIGMA = "| sigma.collection\n"  # in `python -X importtime`'s report when pySigma is loaded


def replay(
    repo: Path, cache: Path | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`convert.py replay` in repo over its labelled events, the cache in cache/ (None: no
    XDG_CACHE_HOME), with Python's import report on stderr (-X importtime); `env` added to the
    environment."""
    command = [sys.executable, "-X", "importtime", "convert.py", "replay", *args, "events.jsonl"]
    environment = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    environment |= ({"XDG_CACHE_HOME": str(cache)} if cache else {}) | (env or {})
    return subprocess.run(
        command, cwd=repo, env=environment, capture_output=True, text=True, timeout=120
    )


def converted(result: subprocess.CompletedProcess[str]) -> bool:
    """Whether that replay loaded pySigma, to convert the rules."""
    return PYSIGMA in result.stderr


def seen(result: subprocess.CompletedProcess[str]) -> tuple[int, str, list[str]]:
    """What a user sees: the exit code, the alerts, replay's own lines on stderr."""
    own = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    return result.returncode, result.stdout, own


@pytest.fixture
def project(repo: Path) -> Path:
    """A copy of the repository with a log of the labelled TokenRequest events."""
    events = sorted(EVENTS.glob("*.json"))
    lines = [json.dumps(json.loads(path.read_text())) + "\n" for path in events]
    (repo / "events.jsonl").write_text("".join(lines))
    return repo


def test_a_replay_after_the_first_loads_no_pysigma(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, second = replay(project, cache), replay(project, cache)
    assert converted(first) and not converted(second)
    assert seen(second) == seen(first)
    assert json.loads(first.stdout.splitlines()[0])["rule_id"] == TOKEN_RULE_ID
    assert [p.name for p in (cache / "k8s-audit-detect").iterdir()][0].startswith("replay-")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


RULE = Path("sigma/rules") / f"{RULE_STEM}.yml"
ORG_FILTER = """title: The platform team's own token tool
id: 0f1e2d3c-4b5a-4697-8877-665544332211
status: test
logsource:
  product: kubernetes
  service: audit
filter:
  rules:
    - kubernetes_serviceaccount_token_requested
  selection:
    user.username: alice@example.com
  condition: not selection
"""
CHANGES: dict[str, Callable[[Path], None]] = {
    "rule_edited": lambda repo: edit(
        repo / RULE, "title: Kubernetes Service", "title: Edited Kubernetes Service"
    ),
    "rule_added": lambda repo: shutil.copy(
        Path(__file__).parent / "rules" / "denied_request_anonymous_or_forbidden.yml",
        repo / "sigma" / "rules",
    ),
    "org_filter_added": lambda repo: (repo / "sigma/filters/org/platform_tool.yml").write_text(
        ORG_FILTER
    ),
    "pipeline_edited": lambda repo: edit(
        repo / "pipelines/duckdb_kubernetes_audit.yml",
        "user.username: user.username",
        "user.username: impersonatedUser.username",
    ),
    # the code that converts: a target's or a pipeline type's change reaches the queries
    "package_edited": lambda repo: edit(
        repo / "k8s_audit_detect/targets.py", "REPLAY_TARGET =", "# edited\nREPLAY_TARGET ="
    ),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_to_what_the_conversion_reads_is_converted_anew(
    project: Path, tmp_path: Path, change: str
) -> None:
    """After the change, the replay with the cache converts again and sees exactly what a
    replay without a cache sees, and the one after it takes that from the cache."""
    cache = tmp_path / "cache"
    before = replay(project, cache)
    CHANGES[change](project)
    after, fresh, again = (replay(project, path) for path in (cache, tmp_path / "new", cache))
    assert converted(after) and not converted(again)
    assert seen(after) == seen(fresh) == seen(again)
    if change != "package_edited":  # a comment: the same queries
        assert seen(after) != seen(before)


def test_each_set_of_environments_has_its_own(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    plain, eks = replay(project, cache), replay(project, cache, "--env", "eks")
    assert converted(plain) and converted(eks)
    assert seen(replay(project, cache, "--env", "eks")) == seen(eks)
    assert seen(replay(project, cache)) == seen(plain)
    assert len(list((cache / "k8s-audit-detect").iterdir())) == 2


def rewritten(change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    return lambda kept: kept.write_bytes(change(kept.read_bytes()))


def replaced(make: Callable[[Path], object]) -> Callable[[Path], None]:
    return lambda kept: (kept.unlink(), make(kept))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "empty": rewritten(lambda data: b""),
    "cut_short": rewritten(lambda data: data[: len(data) // 2]),
    "not_json": rewritten(lambda data: b"\x00\xff garbage"),
    "another_fingerprint": rewritten(
        lambda data: data.replace(b'"fingerprint": "', b'"fingerprint": "0')
    ),
    "a_rule_without_its_query": rewritten(lambda data: data.replace(b'"query":', b'"kuery":', 1)),
    "a_title_not_text": rewritten(
        lambda data: data.replace(b'"title": "', b'"title": 7, "x": "', 1)
    ),
    "fields_not_a_list": rewritten(lambda data: data.replace(b'"fields": [', b'"fields": "[', 1)),
    "not_an_object": rewritten(lambda data: b"[]"),
    "nested_too_deep_to_parse": rewritten(lambda data: b"[" * 100_000 + b"]" * 100_000),
    "writable_by_others": lambda kept: kept.chmod(0o666),
    "a_named_pipe": replaced(os.mkfifo),  # read, it would wait for a writer for ever
    "a_folder": replaced(Path.mkdir),  # cannot be replaced: converted every time
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_file_is_converted_anew(project: Path, tmp_path: Path, damage: str) -> None:
    """Replay converts the rules and sees what it saw before; the file is replaced, so the run
    after takes it again (a folder in its place cannot be, and nothing is left beside it)."""
    cache = tmp_path / "cache"
    first = replay(project, cache)
    (kept,) = (cache / "k8s-audit-detect").iterdir()
    DAMAGE[damage](kept)
    damaged, after = replay(project, cache), replay(project, cache)
    assert converted(damaged)
    assert converted(after) == (damage == "a_folder")
    assert seen(damaged) == seen(after) == seen(first)
    assert [p.name for p in (cache / "k8s-audit-detect").iterdir()] == [kept.name]


def test_a_cache_that_cannot_be_written_costs_only_time(project: Path, tmp_path: Path) -> None:
    """XDG_CACHE_HOME a file, not a folder: every replay converts, and says nothing of it."""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    reference = replay(project, tmp_path / "cache")
    first, second = replay(project, blocked), replay(project, blocked)
    assert converted(first) and converted(second)
    assert seen(first) == seen(second) == seen(reference)


def test_a_rule_changed_while_it_is_converted_is_not_kept(
    project: Path, tmp_path: Path, monkeypatch
) -> None:
    """A rule edited after replay fingerprinted it, before pySigma read it: the conversion of
    the edited rule is not kept under the fingerprint of the rule before it, which replay would
    take for the edited rule's once the rule is as it was (an undo, a checkout back)."""
    from k8s_audit_detect import cli, paths

    for name in ("ROOT", "RULES_DIR", "FILTERS_DIR", "PIPELINES_DIR", "QUERIES_DIR", "TRIAGE_DIR"):
        monkeypatch.setattr(paths, name, getattr(paths, name))  # main(root=...) changes them
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    rule = project / RULE
    before = rule.read_text()
    load = cli.load_rules

    def edited_meanwhile(envs):
        edit(rule, "title: Kubernetes Service", "title: Edited Kubernetes Service")
        return load(envs)

    monkeypatch.setattr(cli, "load_rules", edited_meanwhile)
    events = str(project / "events.jsonl")
    assert cli.main(["replay", events], root=project) == 0
    assert not (cache / "k8s-audit-detect").exists() or not any(
        (cache / "k8s-audit-detect").iterdir()
    )
    rule.write_text(before)
    back, fresh = replay(project, cache), replay(project, tmp_path / "fresh")
    assert seen(back) == seen(fresh)
    assert "Edited" not in back.stdout


def test_an_environment_removed_since_is_still_refused(project: Path, tmp_path: Path) -> None:
    """`--env` names a folder of filters: once that folder is gone, the cache of a run that
    had it does not make the name valid."""
    cache = tmp_path / "cache"
    (project / "sigma" / "filters" / "staging").mkdir()
    assert replay(project, cache, "--env", "staging").returncode == 0
    (project / "sigma" / "filters" / "staging").rmdir()
    result = replay(project, cache, "--env", "staging")
    assert result.returncode == 2
    assert "unknown environment 'staging'" in result.stderr


def test_a_project_whose_path_is_not_utf8(project: Path, tmp_path: Path) -> None:
    odd = tmp_path.parent / (tmp_path.name + os.fsdecode(b"-caf\xe9"))
    shutil.copytree(project, odd)
    cache = tmp_path / "cache"
    first, second = replay(odd, cache), replay(odd, cache)
    assert first.returncode == 0, first.stderr
    assert converted(first) and not converted(second)
    assert seen(second) == seen(first)


@pytest.mark.parametrize("home", ["", "relative-home"])
def test_no_cache_without_an_absolute_home(project: Path, home: str) -> None:
    """No XDG_CACHE_HOME and HOME empty or relative: nothing is kept (not in / or in the
    working directory); every run converts."""
    runs = [replay(project, None, env={"HOME": home}) for _ in range(2)]
    assert all(run.returncode == 0 and converted(run) for run in runs)
    assert not (project / "relative-home").exists()


def test_a_relative_xdg_cache_home_is_ignored(project: Path, tmp_path: Path) -> None:
    """The XDG base directory spec: a relative path is invalid; ~/.cache is used."""
    result = replay(project, None, env={"XDG_CACHE_HOME": "relative", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert not (project / "relative").exists()
    assert len(list((tmp_path / ".cache" / "k8s-audit-detect").iterdir())) == 1


def test_replay_queries_come_back_from_json_as_they_were() -> None:
    """What the cache keeps, read back, is the plan itself: every field of every rule."""
    from k8s_audit_detect.cli import ReplayQueries, load_rules, replay_queries

    plan = replay_queries(load_rules(["eks"]))
    assert plan.rules and plan.correlations and plan.bases
    assert ReplayQueries.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_the_fingerprint_follows_pysigmas_installed_files(tmp_path: Path, monkeypatch) -> None:
    """pySigma or a backend upgraded or edited in place (a file's size or time), or any
    distribution beside it installed or upgraded: another fingerprint; nothing changed: the
    same."""
    from k8s_audit_detect import conversion_cache

    site = tmp_path / "site-packages"
    (site / "sigma" / "backends").mkdir(parents=True)
    module = site / "sigma" / "backends" / "x.py"
    module.write_text("a = 1\n")
    (site / "pysigma-0.11.23.dist-info").mkdir()
    monkeypatch.setattr(conversion_cache, "_installed_sigma", lambda: [site / "sigma"])
    prints = [conversion_cache.fingerprint([])]
    assert conversion_cache.fingerprint([]) == prints[0]
    module.write_text("a = 22\n")
    prints.append(conversion_cache.fingerprint([]))
    status = module.stat()
    os.utime(module, ns=(status.st_atime_ns, status.st_mtime_ns + 1))
    prints.append(conversion_cache.fingerprint([]))
    (site / "pysigma-0.11.23.dist-info").rename(site / "pysigma-0.11.24.dist-info")
    prints.append(conversion_cache.fingerprint([]))
    (site / "pyyaml-6.0.2.dist-info").mkdir()
    prints.append(conversion_cache.fingerprint([]))
    prints.append(conversion_cache.fingerprint(["eks"]))
    assert len(set(prints)) == len(prints)


def test_pysigma_is_found_where_it_is_installed() -> None:
    import sigma.rule

    from k8s_audit_detect import conversion_cache

    assert Path(sigma.rule.__file__).parent.parent in conversion_cache._installed_sigma()
