"""The command line with what users really do: its help, printing what it would write, odd
files in sigma/, and a queries/ folder that is not plain. Bad input is one line and exit 2
with nothing written; writes respect the umask and stay inside queries/."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import one_error_line, snapshot

from convert import TARGETS, environments

RULE = Path("sigma/rules/credential_access_kubernetes_serviceaccount_token_requested.yml")
EKS_FILTER = Path("sigma/filters/eks/eks_control_plane_identities.yml")
SPLUNK_QUERY = Path("queries/splunk") / f"{RULE.stem}.spl"


def run(repo: Path, *args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "convert.py", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=None if umask is None else (lambda: os.umask(umask)),
    )


def change_the_rule(repo: Path) -> None:
    """An edit that changes every generated file."""
    rule = repo / RULE
    rule.write_text(rule.read_text().replace("level: medium", "level: high"))


def sections(stdout: str) -> dict[str, str]:
    """--stdout's output as {path: content}: each file after a line `==> path <==`, and a
    blank line between one file and the next header."""
    parts = re.split(r"(?m)^==> (.+) <==\n", stdout)
    assert parts[0] == "", "--stdout starts with a header line"
    files = dict(zip(parts[1::2], parts[2::2], strict=True))
    for path in list(files)[:-1]:
        assert files[path].endswith("\n\n"), f"no blank line after {path}"
        files[path] = files[path][:-1]
    return files


# --- help --------------------------------------------------------------------------------


def test_help_gives_examples_the_environments_and_replay_as_a_command_of_its_own(repo) -> None:
    result = run(repo, "--help")
    assert result.returncode == 0
    usage = result.stdout.split("\n\n")[0]
    lines = usage.splitlines()
    main_usage = [line for line in lines if "replay" not in line]
    assert main_usage and "FILE" not in "\n".join(main_usage)  # replay is not in the main form
    assert any("convert.py replay" in line for line in lines)
    assert "examples:" in result.stdout
    assert "python convert.py -t splunk --stdout" in result.stdout
    assert f"environments: {', '.join(environments())}" in result.stdout


# --- --stdout prints what the same run would write ------------------------------------------


def test_stdout_prints_exactly_the_files_the_same_run_writes(repo, tmp_path) -> None:
    printed = run(repo, "-t", "sentinel-aksaudit", "--stdout")
    assert printed.returncode == 0, printed.stderr
    files = sections(printed.stdout)
    shutil.rmtree(repo / "queries" / "sentinel-aksaudit")
    shutil.rmtree(repo / "queries" / "sentinel-rules-aksaudit")
    written = run(repo, "-t", "sentinel-aksaudit")
    assert written.returncode == 0, written.stderr
    assert sorted(files) == sorted(written.stdout.split())
    assert {path: (repo / path).read_text() for path in files} == files
    kinds = {Path(path).parts[1] for path in files}
    assert kinds == {"sentinel-aksaudit", "sentinel-rules-aksaudit"}  # queries and artifacts


@pytest.mark.parametrize("mode", ["", "--stdout", "--check", "--sigma-cli"])
def test_a_target_environment_combination_with_nothing_to_convert_says_so(repo, mode) -> None:
    before = snapshot(repo / "queries")
    line = one_error_line(
        run(repo, "-t", "sentinel-aksaudit", "--env", "eks", *filter(None, [mode]))
    )
    assert "sentinel-aksaudit" in line and "eks" in line and "aks" in line
    assert snapshot(repo / "queries") == before


# --- rules and filters as users save them ---------------------------------------------------


def test_a_filter_saved_as_yaml_applies_like_yml(repo) -> None:
    (repo / EKS_FILTER).rename((repo / EKS_FILTER).with_suffix(".yaml"))
    result = run(repo, "-t", "splunk", "--env", "eks", "--stdout")
    assert result.returncode == 0, result.stderr
    assert 'NOT user.username="eks:*"' in result.stdout


def test_an_org_filter_saved_as_yaml_applies_like_yml(repo) -> None:
    """The example filter under an id and a user of its own (a fork may have the example in
    sigma/filters/org/ already)."""
    example = (repo / "examples" / "org-filters" / "org_ci_deployer.yml").read_text()
    text = example.replace(
        "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "9e8d7c6b-5a49-4382-9170-a1b2c3d4e5f6"
    )
    text = text.replace("ci:deployer", "ci:yaml-deployer")
    assert text.count("9e8d7c6b-") == text.count("ci:yaml-deployer") == 1
    (repo / "sigma" / "filters" / "org" / "org_ci_yaml_deployer.yaml").write_text(text)
    result = run(repo, "-t", "splunk", "--stdout")
    assert result.returncode == 0, result.stderr
    assert 'user.username="system:serviceaccount:ci:yaml-deployer"' in result.stdout


def test_a_rule_saved_as_yaml_converts_like_yml(repo) -> None:
    before = (repo / SPLUNK_QUERY).read_text()
    (repo / RULE).rename((repo / RULE).with_suffix(".yaml"))
    result = run(repo)
    assert result.returncode == 0, result.stderr
    assert (repo / SPLUNK_QUERY).read_text() == before
    card = (repo / "queries" / "cards" / f"{RULE.stem}.md").read_text()
    assert f"(../../sigma/rules/{RULE.stem}.yaml)" in card
    commands = run(repo, "--sigma-cli", "-t", "splunk").stdout
    assert "--file-pattern '*.y*ml'" in commands  # sigma-cli reads only *.yml by default


def test_two_rules_with_one_id_are_refused(repo) -> None:
    twin = RULE.with_name("twin.yml")
    text = (repo / RULE).read_text()
    (repo / twin).write_text(text.replace("name: kubernetes_serviceaccount", "name: twin_of"))
    line = one_error_line(run(repo))
    assert str(twin) in line and str(RULE) in line and "id" in line


def test_two_filters_with_one_id_are_refused_even_in_different_environments(repo) -> None:
    twin = Path("sigma/filters/gke/twin.yml")
    (repo / twin).write_text((repo / EKS_FILTER).read_text())
    line = one_error_line(run(repo, "-t", "splunk", "--env", "eks", "--stdout"))
    assert str(twin) in line and str(EKS_FILTER) in line and "id" in line


def test_an_unmapped_field_in_an_org_filter_is_blamed_on_the_filter(repo) -> None:
    example = repo / "examples" / "org-filters" / "org_ci_deployer.yml"
    org = Path("sigma/filters/org/org_ci_deployer.yml")
    (repo / org).write_text(
        example.read_text().replace("objectRef.namespace:", "spec.nodeName:", 1)
    )
    assert "spec.nodeName:" in (repo / org).read_text()  # a pod's, not an audit Event's
    line = one_error_line(run(repo, "-t", "splunk"))
    assert line.startswith(f"convert.py: {org}: ")
    assert "spec.nodeName" in line and "in the filter" in line


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("- title: a list\n- title: of rules\n", "list"),
        ("just a string\n", "scalar"),
        ("", "empty"),
        ("---\n", "empty"),
    ],
    ids=["yaml_list", "yaml_scalar", "empty_file", "only_a_document_marker"],
)
def test_a_rule_file_that_is_not_a_rule_is_one_line(repo, content: str, what: str) -> None:
    bad = RULE.with_name("bad.yml")
    (repo / bad).write_text(content)
    before = snapshot(repo / "queries")
    line = one_error_line(run(repo))
    assert line.startswith(f"convert.py: {bad}: ") and what in line
    assert snapshot(repo / "queries") == before
    assert one_error_line(run(repo, "replay", str(repo / RULE))).startswith(f"convert.py: {bad}")


def test_a_directory_named_like_a_rule_is_one_line(repo) -> None:
    (repo / RULE.with_name("x.yml")).mkdir()
    before = snapshot(repo / "queries")
    line = one_error_line(run(repo))
    assert "sigma/rules/x.yml" in line and "directory" in line
    assert snapshot(repo / "queries") == before


# --- writes --------------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """A folder nobody can write to, root included (root ignores permission bits, so as root
    the folder is made immutable)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    assert made.returncode == 0, f"cannot make {folder} read-only here: {made.stderr}"
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_queries_folder_is_one_line_and_nothing_is_written(repo) -> None:
    change_the_rule(repo)  # the Kibana rules' severity changes
    before = snapshot(repo / "queries")
    with read_only(repo / "queries" / "kibana-kubernetes"):
        line = one_error_line(run(repo))
    assert "queries/kibana-kubernetes" in line and "nothing was written" in line
    assert snapshot(repo / "queries") == before
    assert not [p for p in (repo / "queries").rglob(".*") if p.is_file()]  # no temporary files


def test_stale_files_in_a_read_only_folder_stop_the_run_before_anything_is_written(repo) -> None:
    """The folder holds only a file to remove, found after every other file was staged."""
    (repo / "queries" / "splunk" / "old").mkdir()
    (repo / "queries" / "splunk" / "old" / "stale.spl").write_text("x\n")
    change_the_rule(repo)
    before = snapshot(repo / "queries")
    with read_only(repo / "queries" / "splunk" / "old"):
        line = one_error_line(run(repo))
    assert "queries/splunk/old" in line and "nothing was written" in line
    assert snapshot(repo / "queries") == before
    assert not [p for p in (repo / "queries").rglob(".*") if p.is_file()]


def test_a_folder_where_a_query_goes_is_one_line_and_leaves_no_temporary_file(repo) -> None:
    """Found only as the files are moved into place: those moved before it stay, the rest
    (their temporary files too) are not written."""
    (repo / SPLUNK_QUERY).unlink()
    (repo / SPLUNK_QUERY).mkdir()
    change_the_rule(repo)
    line = one_error_line(run(repo))
    assert str(SPLUNK_QUERY) in line and "cannot be replaced" in line
    assert not [p for p in (repo / "queries").rglob(".*") if p.is_file()]


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask_022", "umask_002"])
def test_writes_respect_the_umask(repo, umask: int) -> None:
    (repo / SPLUNK_QUERY).unlink()  # a new file
    change_the_rule(repo)  # and rewritten ones
    shutil.rmtree(repo / "queries" / "loki-ruler")  # and new folders
    before = snapshot(repo / "queries")
    result = run(repo, umask=umask)
    assert result.returncode == 0, result.stderr
    after = snapshot(repo / "queries")
    written = [repo / "queries" / name for name in after if before.get(name) != after[name]]
    assert len(written) > 30
    modes = {stat.S_IMODE(p.stat().st_mode) for p in written}
    assert modes == {0o666 & ~umask}
    folder = stat.S_IMODE((repo / "queries" / "loki-ruler").stat().st_mode)
    assert folder == 0o777 & ~umask


def test_a_symlinked_folder_in_queries_is_not_written_through(repo, tmp_path) -> None:
    outside = tmp_path / "outside"
    shutil.move(repo / "queries" / "splunk", outside)
    (repo / "queries" / "splunk").symlink_to(outside, target_is_directory=True)
    change_the_rule(repo)
    before = snapshot(outside)
    line = one_error_line(run(repo))
    assert "queries/splunk" in line and "symbolic link" in line
    assert snapshot(outside) == before


def test_check_never_prints_a_file_outside_the_tree(repo, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    (repo / SPLUNK_QUERY).unlink()
    (repo / SPLUNK_QUERY).symlink_to(secret)
    result = run(repo, "--check")
    assert result.returncode == 1
    assert "hunter2" not in result.stdout + result.stderr
    assert str(SPLUNK_QUERY) in result.stdout and "symbolic link" in result.stdout
    rewritten = run(repo)  # regenerating replaces the link with the query
    assert rewritten.returncode == 0, rewritten.stderr
    assert not (repo / SPLUNK_QUERY).is_symlink() and secret.read_text() == "password=hunter2\n"


def test_every_target_appears_in_help(repo) -> None:
    text = run(repo, "--help").stdout
    assert all(t.name in text for t in TARGETS)
