"""Replay's converted rules, kept between runs while nothing they come from has changed.

Loading the rules and converting them with pySigma is most of `convert.py replay`'s start-up
(0.19 s of 0.26 s on an empty file). Its result is plain data (cli.ReplayQueries), kept as JSON
in one file per project and set of environments, in $XDG_CACHE_HOME/k8s-audit-detect/
(~/.cache/k8s-audit-detect/ when that is not set), and used again only while its fingerprint
is the same. The fingerprint covers everything the conversion reads:
- the project's rules and filters (each Sigma file under sigma/rules/ and sigma/filters/, found
  as the loader finds them) and its pipelines, by content;
- this package's own files (targets, pipeline types, backends), by content;
- pySigma and its backends, the `sigma` namespace package's installed files, by size and
  modification time (as Python's bytecode cache checks a source), and every installed
  distribution's version (the names of the *.dist-info folders beside them);
- the Python version, the environments asked for and this file's format.
A cache file that cannot be read, or does not match, is converted anew and replaced (written
in full, then moved into place, so a concurrent run reads the old file or the new one); a
folder that cannot be written costs only the time. Deleting the folder is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from k8s_audit_detect import UserError, paths, rules

FORMAT = 1  # of the cache files: a change of what they hold changes it


def folder() -> Path | None:
    """Where the cache lives, or None when there is no home to put it in."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(base):  # the XDG base directory spec: a relative path is ignored
        return Path(base) / "k8s-audit-detect"
    try:
        return Path.home() / ".cache" / "k8s-audit-detect"
    except RuntimeError:  # no HOME and no password entry
        return None


def fingerprint(envs: Sequence[str]) -> str:
    """What a conversion with these environments' filters depends on, as one digest."""
    digest = hashlib.sha256()

    def add(*parts: str | bytes) -> None:
        for part in parts:
            data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
            digest.update(len(data).to_bytes(8, "little") + data)

    add(str(FORMAT), sys.version, *envs, "")
    project = [
        *rules.rule_files(paths.RULES_DIR),
        *rules.rule_files(paths.FILTERS_DIR),
        *rules.rule_files(paths.PIPELINES_DIR),
        *_files(paths.PACKAGE_DIR),
    ]
    for path in project:
        add(str(path), path.read_bytes())
    for location in _installed_sigma():
        for path in _files(location):
            status = path.stat()
            add(str(path), f"{status.st_size} {status.st_mtime_ns}")
        site = location.parent
        add(str(site), *sorted(p.name for p in site.iterdir() if p.name.endswith(".dist-info")))
    return digest.hexdigest()


def _files(top: Path) -> list[Path]:
    """The files below top, sorted, bytecode caches aside."""
    found: list[Path] = []
    for folder, folders, names in os.walk(top):
        folders[:] = [name for name in folders if name != "__pycache__"]
        found += (Path(folder, name) for name in names)
    return sorted(found)


def _installed_sigma() -> list[Path]:
    """The folders of the `sigma` namespace package (pySigma, its backends and pipelines)
    outside the project (whose sigma/ holds its rules, by content above)."""
    spec = importlib.util.find_spec("sigma")
    found = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    return [p for p in found if p.resolve() != (paths.ROOT / "sigma").resolve()]


def _slot(envs: Sequence[str]) -> Path | None:
    """The cache file of this project and these environments."""
    where = folder()
    if where is None:
        return None
    name = hashlib.sha256(json.dumps([str(paths.ROOT), *envs]).encode()).hexdigest()[:32]
    return where / f"replay-{name}.json"


def read(envs: Sequence[str], key: str) -> Any:
    """What was kept for this project and these environments under that fingerprint, or None."""
    slot = _slot(envs)
    if slot is None:
        return None
    try:
        kept = json.loads(slot.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("fingerprint") != key:
        return None
    return kept.get("value")


def write(envs: Sequence[str], key: str, value: Any) -> None:
    """Keep value for this project and these environments under that fingerprint, if the
    cache folder can be written."""
    from k8s_audit_detect.cli import write_files

    slot = _slot(envs)
    if slot is None:
        return
    kept = {"format": FORMAT, "project": str(paths.ROOT), "envs": list(envs), "fingerprint": key}
    text = json.dumps(kept | {"value": value}, ensure_ascii=False, indent=1) + "\n"
    with contextlib.suppress(UserError, OSError):  # an unwritable cache: converted next time
        write_files({slot: text})
