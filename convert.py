#!/usr/bin/env python3
"""Convert the Sigma rules under sigma/rules/ into every target's query, and replay audit logs.

    python convert.py                    write queries/<target>/<rule>.<ext> for every target
    python convert.py --check            compare with the committed queries/, exit 1 on a diff
    python convert.py -t splunk --stdout print one target's queries
    python convert.py --list             the targets: platform, data source, verifying engine
    python convert.py replay FILE...     run the rules over Kubernetes audit log files (DuckDB)

Adding a SIEM is a pipeline file under pipelines/ plus one row in TARGETS
(k8s_audit_detect/targets.py).
Exit codes: 0 done, 1 --check found differences, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import functools
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k8s_audit_detect import UserError, artifacts, rules
from k8s_audit_detect.rules import rule_stem, sigma_rules

if TYPE_CHECKING:  # pySigma is imported where it is used: --help and --list stay instant
    from sigma.collection import SigmaCollection
    from sigma.conversion.base import Backend
    from sigma.processing.pipeline import ProcessingPipeline
    from sigma.rule import SigmaRule
    from sigma.types import SigmaString

from k8s_audit_detect.paths import FILTERS_DIR, PIPELINES_DIR, QUERIES_DIR, ROOT, RULES_DIR
from k8s_audit_detect.targets import (
    ARTIFACTS,
    REPLAY_TARGET,
    TARGETS,
    TARGETS_BY_NAME,
    Artifact,
    Target,
    environments,
)

__all__ = ["ARTIFACTS", "ROOT", "TARGETS", "TARGETS_BY_NAME", "Artifact", "Target"]


# ---------------------------------------------------------------------------------------------
# Loading and converting


def load_rules(envs: Sequence[str] = ()) -> SigmaCollection:
    """The rules with the filters of these environments and the organisation's applied."""
    return rules.load_rules(RULES_DIR, FILTERS_DIR, envs, ROOT)


def _rel(path: object) -> str:
    return rules.relative(path, ROOT)


def convert_target(target: Target, collection: SigmaCollection) -> dict[str, str]:
    """Convert every rule for one target: {rule file stem: query}."""
    from sigma.exceptions import SigmaError, SigmaTransformationError
    from sigma.processing.pipeline import ProcessingPipeline

    backend_class = _backend_class(target.backend)  # imports plugins' YAML transformation types
    pipeline = ProcessingPipeline()
    for name in target.pipelines:
        try:  # a fresh pipeline each time (conversion keeps state in it), parsed YAML once
            pipeline += ProcessingPipeline.from_dict(copy.deepcopy(_pipeline_yaml(name)))
        except (SigmaError, ValueError) as error:
            path = _rel(PIPELINES_DIR / name)
            raise UserError(f"{path}: {error}; fix the pipeline YAML") from error
    pipelines = " + ".join(f"pipelines/{name}" for name in target.pipelines)
    with _libyaml():
        backend = backend_class(processing_pipeline=pipeline, **dict(target.backend_options))
    queries: dict[str, str] = {}
    for rule in sigma_rules(collection):
        try:
            # pySigma's pipelines change the rule they process: convert a copy
            converted = backend.convert_rule(copy.deepcopy(rule))
            output = backend.finalize(converted, backend.default_format)
        except SigmaError as error:
            refused = refused_value(pipeline, rule)
            if refused is not None:
                where, field, value, reason = refused
                raise UserError(
                    f"{_rel(where)}: target {target.name}: {field} value "
                    f"{rules.sigma_text(value)}: {reason}"
                ) from error
            message = _one_line(ValueError.__str__(error))  # pySigma's " in <file>" left out
            if not isinstance(error, SigmaTransformationError):
                message += "; fix the rule (check it with `sigma check`)"
            elif message.startswith("The following fields are not mapped"):
                message += "; map the field in the pipeline or change the rule"
            # else a pipeline's own refusal, which says why and what to do
            raise UserError(
                f"{_rel(rule.source.path)}: target {target.name} (pipeline {pipelines}): {message}"
            ) from error
        except Exception as error:  # the backend's own failure, e.g. on |cased or |exists
            raise UserError(
                f"{_rel(rule.source.path)}: target {target.name}: the {target.backend} backend "
                f"cannot convert it ({type(error).__name__}: {_one_line(error)}); remove what "
                "it names from the rule or filter (a modifier such as |cased or |exists)"
            ) from error
        queries[rule_stem(rule)] = _as_text(output)
    return queries


def _one_line(error: object) -> str:
    return " ".join(str(error).split())


def refused_value(
    pipeline: ProcessingPipeline, rule: SigmaRule
) -> tuple[object, str, SigmaString, str] | None:
    """The first value a pipeline's detection_item_failure refuses: (its file, field, value,
    the pipeline's message), found with the pipeline's own conditions; None if none does."""
    from sigma.processing.transformations import DetectionItemFailureTransformation
    from sigma.rule import SigmaDetection
    from sigma.types import SigmaString

    def items(detection: SigmaDetection) -> Iterator[Any]:
        for entry in detection.detection_items:
            yield from items(entry) if isinstance(entry, SigmaDetection) else (entry,)

    failures = [
        item
        for item in pipeline.items
        if isinstance(item.transformation, DetectionItemFailureTransformation)
    ]
    for failure in failures:
        conditions = failure.detection_item_conditions
        for detection in rule.detection.detections.values():
            for item in items(detection):
                for value in item.value:
                    if (
                        isinstance(value, SigmaString)
                        and conditions
                        and all(
                            getattr(c, "match_value", lambda _: False)(value) for c in conditions
                        )
                    ):
                        where = item.source or rule.source
                        return where, item.field, value, failure.transformation.message
    return None


@functools.cache
def _pipeline_yaml(name: str) -> dict:
    """A pipeline file's YAML, parsed once per run (libyaml's parser where it is built in)."""
    import yaml

    path = PIPELINES_DIR / name
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=rules.yaml_loader())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{_rel(path)}: {error}; fix the pipeline YAML") from error


def _as_text(output: object) -> str:
    """A backend's finalized output as sigma-cli prints it: one query a line, or a document."""
    if isinstance(output, list):
        return "\n".join(str(query) for query in output)
    if isinstance(output, str):
        return output
    return json.dumps(output, indent=2)


@contextlib.contextmanager
def _libyaml() -> Iterator[None]:
    """While a backend starts, parse YAML with PyYAML's libyaml parser (CSafeLoader: the same
    constructor, so the same data) instead of its pure-Python one: the Sumo Logic backend
    parses its bundled schema, about 240 YAML documents, at start-up (0.37 s -> 0.04 s)."""
    import yaml

    saved = yaml.safe_load, yaml.safe_load_all
    yaml.safe_load = functools.partial(yaml.load, Loader=rules.yaml_loader())
    yaml.safe_load_all = functools.partial(yaml.load_all, Loader=rules.yaml_loader())
    try:
        yield
    finally:
        yaml.safe_load, yaml.safe_load_all = saved


@functools.cache
def _installed_backends() -> dict[str, type[Backend]]:
    """pySigma's installed backend plugins, and this project's own (k8s_audit_detect/)."""
    from sigma.plugins import InstalledSigmaPlugins

    from k8s_audit_detect.cloudwatch import CloudWatchLogsInsightsBackend

    # Importing a backend imports its own pipelines module, which registers the YAML
    # transformation types it brings (Loki's set_custom_attribute): backends only are enough.
    plugins = InstalledSigmaPlugins.autodiscover(include_pipelines=False, include_validators=False)
    return {
        **plugins.backends,
        CloudWatchLogsInsightsBackend.identifier: CloudWatchLogsInsightsBackend,
    }


def _backend_class(identifier: str) -> type[Backend]:
    """The backend class `sigma convert -t <identifier>` uses."""
    backends = _installed_backends()
    if identifier not in backends:
        raise UserError(
            f"pySigma backend '{identifier}' is not installed; "
            "run `pip install -r requirements.txt`"
        )
    return backends[identifier]


def render(targets: Iterable[Target], envs: Sequence[str] = ()) -> dict[Path, str]:
    """Every output file and its content, in memory: nothing is written here. Without envs,
    each target's query for the rule alone (queries/<target>/<rule>.<ext>) and for each
    environment (queries/<target>/<env>/<rule>.<ext>), the deployable artifacts built from
    them, and a rule card per rule; with envs, for that set of them."""
    targets = list(targets)
    collections: dict[tuple[str, ...], SigmaCollection] = {}
    converted: dict[tuple[str, tuple[str, ...]], list[tuple[SigmaRule, str]]] = {}
    files: dict[Path, str] = {}
    for target in targets:
        for variant in target.variants(envs):
            if variant not in collections:
                collections[variant] = load_rules(variant)
                _check_unique_stems(collections[variant])
            folder = QUERIES_DIR / target.name / "+".join(variant)
            queries = convert_target(target, collections[variant])
            converted[target.name, variant] = [
                (rule, queries[rule_stem(rule)]) for rule in sigma_rules(collections[variant])
            ]
            for stem, query in queries.items():
                files[folder / f"{stem}.{target.extension}"] = query + "\n"
    for artifact in ARTIFACTS:
        for (target_name, variant), pairs in converted.items():
            if target_name == artifact.target:
                folder = QUERIES_DIR / artifact.name / "+".join(variant)
                # a platform-tied target's environment is its platform, not a variant of it
                tied = TARGETS_BY_NAME[target_name].environments is not None
                options = {"name": artifact.name, "variant": () if tied else variant}
                options |= artifact.options
                for name, content in artifact.build(pairs, options).items():
                    files[folder / name] = content.rstrip("\n") + "\n"
    if not envs and len(targets) == len(TARGETS):
        files |= rule_cards(converted)
    return files


def rule_cards(
    converted: dict[tuple[str, tuple[str, ...]], list[tuple[SigmaRule, str]]],
) -> dict[Path, str]:
    """queries/cards/<rule>.md: each target's query (the rule alone, or a platform-tied
    target's environment) with what verified it, and the environments' filters."""
    envs = []
    for env in environments():
        paths = sorted((FILTERS_DIR / env).rglob("*.yml"))
        titles = [(rules.parse(p, ROOT).filters[0].title, _rel(p)) for p in paths]
        envs.append((env, titles))
    corpus = ROOT / "tests" / "data" / "corpus" / "public_audit_events.jsonl"
    public = len(corpus.read_text(encoding="utf-8").splitlines()) if corpus.is_file() else 0
    own = len(list((ROOT / "tests" / "events").rglob("*.json")))
    evidence = (
        f"Every query verified by an engine was run over {public + own} labelled audit events "
        f"({public} public, {own} written for this project; tests/test_engines.py), each in "
        "the shape its platform stores them, and matched exactly the events labelled to "
        "alert; under each environment's filters, that platform's own token minters are quiet."
    )
    cards: dict[Path, str] = {}
    first = {t.name: t.variants()[0] for t in TARGETS}
    by_rule: dict[str, tuple[SigmaRule, list[tuple[str, ...]]]] = {}
    for target in TARGETS:
        for rule, query in converted.get((target.name, first[target.name]), []):
            row = (target.name, target.platform, target.verified_by, target.unverified, query)
            by_rule.setdefault(rule_stem(rule), (rule, []))[1].append(row)
    for stem, (rule, rows) in by_rule.items():
        cards[QUERIES_DIR / "cards" / f"{stem}.md"] = artifacts.rule_card(
            rule, rows, envs, evidence
        )
    return cards


def _check_unique_stems(collection: SigmaCollection) -> None:
    stems = [rule_stem(rule) for rule in sigma_rules(collection)]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:
        raise UserError(f"two rules share the file name {', '.join(twice)}; rename one")


# ---------------------------------------------------------------------------------------------
# Writing and checking


def write_files(files: dict[Path, str], prune: Path | None = None) -> list[Path]:
    """The one place that writes: each file atomically; with prune, remove stale files there.

    Returns the paths whose content changed.
    """
    changed = []
    for path, content in sorted(files.items()):
        data = content.encode("utf-8")
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        changed.append(path)
    if prune is not None and prune.is_dir():
        for stale in sorted(set(_generated_files(prune)) - set(files)):
            stale.unlink()
            changed.append(stale)
    return changed


def _generated_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and path.name != "README.md"]


@dataclass
class CheckResult:
    """How the committed queries/ differs from what the rules give."""

    checked: int
    missing: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)  # path -> unified diff lines
    stale: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.stale)

    def lines(self) -> list[str]:
        out = [f"missing: {path}" for path in self.missing]
        out += [line for diff in self.changed.values() for line in diff]
        out += [f"not generated by any rule and target (stale): {path}" for path in self.stale]
        return out

    def as_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "checked": self.checked,
                "missing": self.missing,
                "changed": sorted(self.changed),
                "stale": self.stale,
                "fix": None if self.ok else "run `python convert.py` and commit queries/",
            },
            indent=2,
        )


def check_files(files: dict[Path, str], stale_in: Path | None) -> CheckResult:
    """Compare the files as generated with those committed; with stale_in, files there that
    nothing generates count as differences too."""
    result = CheckResult(checked=len(files))
    for path, content in sorted(files.items()):
        rel = _rel(path)
        if not path.is_file():
            result.missing.append(rel)
            continue
        committed = path.read_text(encoding="utf-8")
        if committed != content:
            result.changed[rel] = list(
                difflib.unified_diff(
                    committed.splitlines(),
                    content.splitlines(),
                    f"{rel} (committed)",
                    f"{rel} (generated)",
                    lineterm="",
                )
            )
    on_disk = _generated_files(stale_in) if stale_in is not None and stale_in.is_dir() else []
    result.stale = [_rel(stale) for stale in sorted(set(on_disk) - set(files))]
    return result


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert.py",
        description="Convert the Sigma rules in sigma/rules/ into every target's query "
        "(queries/<target>/<rule>.<ext>), or replay Kubernetes audit logs through them.",
    )
    parser.add_argument(
        "-t",
        "--target",
        action="append",
        choices=[t.name for t in TARGETS],
        metavar="TARGET",
        help="convert for this target only (repeatable; default: all; see --list)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="ENV",
        help="apply this environment's filters from sigma/filters/ENV/ (repeatable: one query "
        "with all of them); default: the rule alone and each environment",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if queries/ differs from what the rules give",
    )
    mode.add_argument("--stdout", action="store_true", help="print the queries, write nothing")
    parser.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="--check's report on stdout: a readable diff (text) or one JSON object for "
        "machines: ok, checked, missing, changed, stale",
    )
    mode.add_argument("--list", action="store_true", help="list the targets and exit")
    sub = parser.add_subparsers(dest="command", metavar="replay")
    replay = sub.add_parser(
        "replay",
        help="run the rules over Kubernetes audit log files",
        description="Run the rules over Kubernetes audit log files (audit.k8s.io/v1 events, one "
        "JSON object per line, .gz allowed) on DuckDB, through the duckdb target's query. "
        "Alerts go to stdout as JSON lines, a summary to stderr; exit 0 with or without alerts.",
    )
    replay.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="ENV",
        help="apply this environment's filters from sigma/filters/ENV/ (repeatable)",
    )
    replay.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audit log file")
    return parser


def list_targets() -> str:
    """Every target as a block: platform, data, the vendor source of its field mapping, what
    no vendor source confirms, and the engine that verifies its query."""
    blocks = []
    for t in TARGETS:
        rows = [
            ("platform", t.platform),
            ("data", t.data_source),
            ("mapping source", t.source),
            *([("UNVERIFIED", t.unverified)] if t.unverified else []),
            ("verified by", t.verified_by),
        ]
        blocks.append("\n".join([t.name, *(f"  {key + ':':<16}{value}" for key, value in rows)]))
    return "\n\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.format != "text" and not args.check:
        parser.error("--format goes with --check")
    try:
        if args.command == "replay":
            from k8s_audit_detect.replay import run_replay

            collection = load_rules(args.env)
            queries = convert_target(REPLAY_TARGET, collection)
            pairs = [(rule, queries[rule_stem(rule)]) for rule in sigma_rules(collection)]
            return run_replay(args.files, pairs, sys.stdout, sys.stderr)
        if args.list:
            print(list_targets())
            return 0
        targets = [TARGETS_BY_NAME[name] for name in args.target] if args.target else TARGETS
        files = render(targets, args.env)
        partial = bool(args.target or args.env)
        if args.stdout:
            for path, content in files.items():
                print(f"# {_rel(path)}\n{content}", end="")
            return 0
        if args.check:
            result = check_files(files, stale_in=None if partial else QUERIES_DIR)
            if args.format == "json":
                print(result.as_json())
            elif not result.ok:
                print("\n".join(result.lines()))
            if not result.ok:
                print(
                    f"convert.py --check: {_rel(QUERIES_DIR)}/ is out of date; "
                    "run `python convert.py` and commit queries/",
                    file=sys.stderr,
                )
                return 1
            print(f"convert.py --check: {len(files)} query files up to date", file=sys.stderr)
            return 0
        changed = write_files(files, prune=None if partial else QUERIES_DIR)
        for path in files:
            print(_rel(path))
        print(f"convert.py: {len(files)} query files, {len(changed)} changed", file=sys.stderr)
        return 0
    except UserError as error:
        print(f"convert.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
