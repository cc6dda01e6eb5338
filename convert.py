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

from k8s_audit_detect import UserError, artifacts, correlations, rules
from k8s_audit_detect.rules import rule_stem, sigma_rules

if TYPE_CHECKING:  # pySigma is imported where it is used: --help and --list stay instant
    from sigma.collection import SigmaCollection
    from sigma.conversion.base import Backend
    from sigma.correlations import SigmaCorrelationRule
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


def convert_target(
    target: Target, collection: SigmaCollection, with_correlations: bool = True
) -> dict[str, str]:
    """Convert every rule for one target: {rule file stem: query}; the correlation rules too
    unless with_correlations is False."""
    plain = [rule for rule in sigma_rules(collection) if rule._output]  # not a base rule
    queries = {rule_stem(rule): query for rule, query in convert_plain(target, plain)}
    return queries | (convert_correlations(target, collection) if with_correlations else {})


def convert_plain(target: Target, selected: Sequence[SigmaRule]) -> list[tuple[SigmaRule, str]]:
    """Each plain rule's query for the target (a correlation's base rules included when
    given: replay reads the events they match once, for all correlations)."""
    from sigma.exceptions import SigmaError, SigmaTransformationError

    backend_class = _backend_class(target.backend)  # imports plugins' YAML transformation types
    pipeline = _pipeline(target)
    pipelines = " + ".join(f"pipelines/{name}" for name in target.pipelines)
    with _libyaml():
        backend = backend_class(processing_pipeline=pipeline, **dict(target.backend_options))
    queries: list[tuple[SigmaRule, str]] = []
    for rule in selected:
        try:
            # pySigma's pipelines change the rule they process (and a base rule's output is
            # switched off): convert a copy, as a rule of its own
            converted = backend.convert_rule(_standalone(rule))
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
        queries.append((rule, _as_text(output)))
    return queries


def _standalone(rule: SigmaRule) -> SigmaRule:
    """A copy of the rule that converts as a rule of its own: no correlation references it."""
    copied = copy.deepcopy(rule, {id(rule._backreferences): []})
    copied._output = True
    return copied


def _pipeline(target: Target) -> ProcessingPipeline:
    """The target's pipelines composed, fresh (conversion keeps state in a pipeline), each
    file's YAML parsed once per run."""
    from sigma.exceptions import SigmaError
    from sigma.processing.pipeline import ProcessingPipeline

    pipeline = ProcessingPipeline()
    for name in target.pipelines:
        try:
            pipeline += ProcessingPipeline.from_dict(copy.deepcopy(_pipeline_yaml(name)))
        except (SigmaError, ValueError) as error:
            path = _rel(PIPELINES_DIR / name)
            raise UserError(f"{path}: {error}; fix the pipeline YAML") from error
    return pipeline


def convert_correlations(target: Target, collection: SigmaCollection) -> dict[str, str]:
    """Convert every correlation rule the target can express: {rule file stem: query}. One
    it cannot (targets.py says why) is left out; any other failure is an error."""
    from sigma.exceptions import SigmaError

    found = correlations.correlation_rules(collection)
    limits = dict(target.correlation_limits)
    todo = [rule for rule in found if correlations.limit(limits, rule) is None]
    if not todo:
        return {}
    backend_class = _backend_class(target.correlation_backend or target.backend)
    pipelines = " + ".join(f"pipelines/{name}" for name in target.pipelines)
    queries: dict[str, str] = {}
    for rule in todo:
        where = f"{_rel(rule.source.path)}: target {target.name}"
        with _libyaml():  # a fresh backend and pipeline per correlation: both keep state
            backend = backend_class(
                processing_pipeline=_pipeline(target), **dict(target.backend_options)
            )
        try:
            query, unmapped = correlations.convert(backend, rule)
        except SigmaError as error:
            raise UserError(
                f"{where} (pipeline {pipelines}): {_one_line(ValueError.__str__(error))}"
            ) from error
        except Exception as error:  # the backend's own refusal of a correlation feature
            raise UserError(
                f"{where}: the {backend_class.identifier} backend cannot convert correlation "
                f"'{rule.name}' ({type(error).__name__}: {_one_line(error)}); list what it "
                "lacks in the target's correlation_limits (k8s_audit_detect/targets.py)"
            ) from error
        if unmapped:
            raise UserError(
                f"{where} (pipeline {pipelines}): correlation '{rule.name}' groups, joins or "
                f"counts by {', '.join(unmapped)}, which the pipeline does not map (pySigma's "
                "strict mapping skips correlation rules); map the field in the pipeline"
            )
        queries[rule_stem(rule)] = query
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
    from k8s_audit_detect.correlation_backends import CORRELATION_BACKENDS

    # Importing a backend imports its own pipelines module, which registers the YAML
    # transformation types it brings (Loki's set_custom_attribute): backends only are enough.
    plugins = InstalledSigmaPlugins.autodiscover(include_pipelines=False, include_validators=False)
    own = [CloudWatchLogsInsightsBackend, *CORRELATION_BACKENDS]
    return {**plugins.backends, **{backend.identifier: backend for backend in own}}


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
                (rule, queries[rule_stem(rule)])
                for rule in output_rules(collections[variant])
                if rule_stem(rule) in queries
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
        parsed = [(rules.parse(p, ROOT).filters[0], _rel(p)) for p in paths]
        titles = [(f.title, path, _filter_refs(f)) for f, path in parsed]
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
    sequence_evidence = (
        "Every query run by an engine was run over the event sequences written for the "
        "correlation rules (tests/sequences/; tests/test_correlations.py), each in the shape "
        "its platform stores them, and alerted exactly once for each group a sequence is "
        "labelled with, and for nothing else: pods using their own tokens for hours stay "
        "quiet; under an environment's filters, that platform's own token minters are quiet."
    )
    cards: dict[Path, str] = {}
    first = {t.name: t.variants()[0] for t in TARGETS}
    by_rule: dict[str, tuple[Any, list[tuple[str, ...]]]] = {}
    for target in TARGETS:
        for rule, query in converted.get((target.name, first[target.name]), []):
            correlation = artifacts.is_correlation(rule)
            checked = target.correlation_verified_by if correlation else target.verified_by
            row = (target.name, target.platform, checked, target.unverified, query)
            by_rule.setdefault(rule_stem(rule), (rule, []))[1].append(row)
    for stem, (rule, rows) in by_rule.items():
        missing: list[tuple[str, str]] = []
        if artifacts.is_correlation(rule):
            for target in TARGETS:
                why = correlations.limit(dict(target.correlation_limits), rule)
                if why is not None:
                    missing.append((target.name, why))
        cards[QUERIES_DIR / "cards" / f"{stem}.md"] = artifacts.rule_card(
            rule, rows, envs, sequence_evidence if missing else evidence, missing
        )
    return cards


def _filter_refs(item: Any) -> tuple[str, ...]:
    """The rule ids and names a filter names."""
    refs = item.filter.rules
    return ("any",) if isinstance(refs, str) else tuple(str(r.reference) for r in refs)


def output_rules(collection: SigmaCollection) -> list[SigmaRule | SigmaCorrelationRule]:
    """The rules that have queries of their own: the plain rules, but not a correlation's base
    rules (generate: false), and the correlation rules."""
    outputs: list[SigmaRule | SigmaCorrelationRule] = [r for r in sigma_rules(collection)]
    return [r for r in outputs if r._output] + correlations.correlation_rules(collection)


def _check_unique_stems(collection: SigmaCollection) -> None:
    stems = [rule_stem(rule) for rule in output_rules(collection)]
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
            *correlation_lines(t),
        ]
        blocks.append("\n".join([t.name, *(f"  {key + ':':<21}{value}" for key, value in rows)]))
    return "\n\n".join(blocks)


def correlation_lines(target: Target) -> list[tuple[str, str]]:
    """--list's lines on Sigma correlation rules: what the target expresses, and why not the
    rest."""
    support = target.correlation_support()
    can = [feature for feature, why in support.items() if not why]
    if not can:
        return [("correlations", f"none: {next(iter(support.values()))}")]
    lines = [
        ("correlations", ", ".join(can)),
        ("correlations tested", target.correlation_verified_by),
    ]
    return lines + [(f"no {feature}", why) for feature, why in support.items() if why]


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
            plain = [rule for rule in sigma_rules(collection) if rule._output]
            found = correlations.correlation_rules(collection)
            bases = {id(b): b for rule in found for b in correlations.base_rules(rule)}
            return run_replay(
                args.files,
                [(rule, queries[rule_stem(rule)]) for rule in plain],
                sys.stdout,
                sys.stderr,
                correlations=[(rule, queries[rule_stem(rule)]) for rule in found],
                base_queries=[q for _, q in convert_plain(REPLAY_TARGET, list(bases.values()))],
            )
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
