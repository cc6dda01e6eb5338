"""Replay's converted rules, kept between runs while nothing they come from has changed.

Loading the rules and converting them with pySigma is most of `convert.py replay`'s start-up
(0.30 s on an empty file, 0.18 s with the rules from here). Its result is plain data
(cli.ReplayQueries), kept as JSON in one file per project and set of environments, in
$XDG_CACHE_HOME/k8s-audit-detect/ (~/.cache/k8s-audit-detect/ when that is not set), and used
again only while its fingerprint is the same. The fingerprint covers everything the conversion
reads:
- the project's rules and filters (each Sigma file under sigma/rules/ and sigma/filters/, found
  as the loader finds them) and its pipelines, by content;
- this package's own files (targets, pipeline types, backends), by content;
- pySigma and its backends, the `sigma` namespace package's installed files, by size and
  modification time (as Python's bytecode cache checks a source), and every installed
  distribution's version (the names of the *.dist-info folders beside them);
- the Python version, the environments asked for and this file's format.
The rules are converted again (and the file replaced) when the file does not match, cannot be
read, or is not a regular file of the user's own that only the user can write (its queries run
as they are: in a shared folder, another user's file is not taken); a rule that changes while
it is converted leaves the cache as it was. A file is written in full, then moved into place,
so a concurrent run reads the old file or the new one. A folder that cannot be written costs
only the time; deleting the folder is always safe. Each Python environment and copy of this
package (a checkout's convert.py, an installed k8s-audit-detect) keeps a file of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from k8s_audit_detect import UserError, paths, rules

FORMAT = 3  # of the cache files: a change of what they hold changes it
MAX_SIZE = 64 * 1024 * 1024  # a larger cache file is not replay's


def folder() -> Path | None:
    """Where the cache lives, or None when there is no home to put it in."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(base):  # the XDG base directory spec: a relative path is ignored
        return Path(base) / "k8s-audit-detect"
    if "HOME" in os.environ and not os.path.isabs(os.environ["HOME"]):
        return None  # empty (Python would take /) or relative (the working directory)
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no password entry
        return None
    return home / ".cache" / "k8s-audit-detect"


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
    # an editable install's entry is a name, not a folder: its files are under another entry
    return [p for p in found if p.is_dir() and p.resolve() != (paths.ROOT / "sigma").resolve()]


def _slot(envs: Sequence[str]) -> Path | None:
    """The cache file of this project and these environments, for this Python environment
    and copy of the package (a checkout's convert.py and an installed k8s-audit-detect, or
    two venvs, each keep their own)."""
    where = folder()
    if where is None:
        return None
    owner = [str(paths.ROOT), sys.prefix, str(paths.PACKAGE_DIR), *envs]
    name = hashlib.sha256(json.dumps(owner).encode()).hexdigest()[:32]
    return where / f"replay-{name}.json"


def read(envs: Sequence[str], key: str) -> Any:
    """What was kept for this project and these environments under that fingerprint, or None.
    Only a regular file of the user's own that no one else can write is read: its queries run
    as they are."""
    slot = _slot(envs)
    if slot is None:
        return None
    try:
        fd = os.open(slot, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO: no wait
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SIZE:
            return None
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
            return None  # POSIX: another user's, or one another user could write
        with os.fdopen(os.dup(fd), "rb") as handle:
            kept = json.loads(handle.read())
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)
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
    # ASCII: a path that is not UTF-8 (its bytes held as surrogates) is written escaped
    text = json.dumps(kept | {"value": value}, indent=1) + "\n"
    with contextlib.suppress(UserError, OSError):  # an unwritable cache: converted next time
        slot.unlink(missing_ok=True)  # not taken (another's, or writable by others): a new one
        write_files({slot: text}, private=True)
