"""The command line: `python convert.py` in a checkout, `k8s-audit-detect` when installed.

Convert the Sigma rules under sigma/rules/ into every target's query and deployable artifacts,
check the committed queries/, and replay audit logs. Adding a SIEM is a pipeline file under
pipelines/ plus one row in TARGETS (k8s_audit_detect/targets.py).
Exit codes: 0 done, 1 --check found differences, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import functools
import importlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k8s_audit_detect import UserError, artifacts, conversion_cache, correlations, paths, rules
from k8s_audit_detect.rules import rule_stem, sigma_rules

if TYPE_CHECKING:  # pySigma is imported where it is used: --help and --list stay instant
    from sigma.collection import SigmaCollection
    from sigma.conversion.base import Backend
    from sigma.correlations import SigmaCorrelationRule
    from sigma.processing.pipeline import ProcessingPipeline
    from sigma.rule import SigmaRule
    from sigma.types import SigmaType

    from k8s_audit_detect.replay import ReplayRule

from k8s_audit_detect.targets import (
    ARTIFACTS,
    REPLAY_TARGET,
    TARGETS,
    TARGETS_BY_NAME,
    Artifact,
    Target,
    environments,
)

# What `python convert.py` (and its tests and scripts) import from it
__all__ = [
    "ARTIFACTS",
    "REPLAY_TARGET",
    "TARGETS",
    "TARGETS_BY_NAME",
    "Artifact",
    "CheckResult",
    "ReplayQueries",
    "Target",
    "build_parser",
    "check_files",
    "convert_correlations",
    "convert_plain",
    "convert_target",
    "environments",
    "list_targets",
    "load_rules",
    "main",
    "refusal",
    "output_rules",
    "render",
    "replay_plan",
    "replay_queries",
    "rule_cards",
    "rule_stem",
    "sigma_cli_commands",
    "sigma_rules",
    "write_files",
]


# ---------------------------------------------------------------------------------------------
# Loading and converting


def load_rules(envs: Sequence[str] = (), *, org: bool = True) -> SigmaCollection:
    """The rules with the filters of these environments and (unless org is False) the
    organisation's applied."""
    return rules.load_rules(paths.RULES_DIR, paths.FILTERS_DIR, envs, paths.ROOT, org=org)


def _rel(path: object) -> str:
    """A path as the user sees it: relative to the project, links not followed."""
    where = getattr(path, "path", path)
    if isinstance(where, Path) and where.is_absolute() and where.is_relative_to(paths.ROOT):
        return str(where.relative_to(paths.ROOT))
    return rules.relative(path, paths.ROOT)


def convert_target(
    target: Target,
    collection: SigmaCollection,
    unavailable: dict[str, str] | None = None,
    with_correlations: bool = True,
) -> dict[str, str]:
    """Convert every rule for one target: {rule file stem: query}. A rule the target's
    pipelines refuse for what the rule itself tests (a field the platform does not record, a
    comparison its language cannot make exactly) is an error, or, with `unavailable`, left
    out and recorded there as {rule file stem: why}. A refusal a filter causes is always an
    error: the filter is the user's to fix. The correlation rules too (one the target cannot
    express is left out: targets.py says why, --list and the rule card show it), unless
    with_correlations is False."""
    plain = [rule for rule in sigma_rules(collection) if rule._output]  # not a base rule
    with _libyaml():  # a backend may load its data as it converts (Sumo Logic's mappings)
        pairs = convert_plain(target, plain, unavailable)
        queries = {rule_stem(rule): query for rule, query in pairs}
        if with_correlations:
            queries |= convert_correlations(target, collection)
    return queries


def convert_plain(
    target: Target, selected: Sequence[SigmaRule], unavailable: dict[str, str] | None = None
) -> list[tuple[SigmaRule, str]]:
    """Each plain rule's query for the target (a correlation's base rules included when
    given: replay reads the events they match once, for all correlations); `unavailable` as
    convert_target's."""
    from sigma.exceptions import SigmaError

    backend_class = _backend_class(target.backend)  # imports plugins' YAML transformation types
    pipeline = _pipeline(target)
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
            where, why, fixable = _explain(target, pipeline, rule, error)
            own = _rel(where) == _rel(rule.source) and not fixable
            if unavailable is not None and own and _refused_without_filters(backend, rule):
                unavailable[rule_stem(rule)] = why
                continue
            raise UserError(f"{_rel(where)}: target {target.name}: {why}") from error
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
            path = _rel(paths.PIPELINES_DIR / name)
            raise UserError(f"{path}: {error}; fix the pipeline YAML") from error
    return pipeline


@dataclass
class ReplayQueries:
    """What `convert.py replay` runs for a set of rules (the duckdb target's queries), as plain
    data: what the conversion cache keeps."""

    rules: list[ReplayRule]  # each plain rule (not a base rule)
    correlations: list[ReplayRule]  # each correlation rule
    bases: list[ReplayRule]  # the correlations' base rules, each once

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": [asdict(rule) for rule in self.rules],
            "correlations": [asdict(rule) for rule in self.correlations],
            "bases": [asdict(rule) for rule in self.bases],
        }

    @classmethod
    def from_json(cls, value: Any) -> ReplayQueries:
        """The queries to_json gave; ValueError if value is not that."""
        from k8s_audit_detect.replay import ReplayRule

        def rule(item: Any) -> ReplayRule:
            read = ReplayRule(**item)
            if not isinstance(read.fields, list) or not isinstance(read.listed, list):
                raise ValueError(f"not a converted rule: {item!r:.80}")
            texts = [read.id, read.title, read.query, *read.fields, *read.listed]
            optional = [read.level, read.correlation]
            if not all(isinstance(text, str) for text in [*texts, *filter(None, optional)]):
                raise ValueError(f"not a converted rule: {item!r:.80}")
            return replace(read, fields=tuple(read.fields), listed=tuple(read.listed))

        try:
            found = cls(
                rules=[rule(item) for item in value["rules"]],
                correlations=[rule(item) for item in value["correlations"]],
                bases=[rule(item) for item in value["bases"]],
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"not replay's queries: {error}") from error
        return found


def replay_queries(collection: SigmaCollection) -> ReplayQueries:
    """The rules of a collection as replay runs them."""
    from k8s_audit_detect.correlate import correlation_rule
    from k8s_audit_detect.replay import base_rule, plain_rule

    queries = convert_target(REPLAY_TARGET, collection)
    plain = [rule for rule in sigma_rules(collection) if rule._output]
    found = correlations.correlation_rules(collection)
    bases = {id(b): b for rule in found for b in correlations.base_rules(rule)}
    converted = convert_plain(REPLAY_TARGET, list(bases.values()))
    return ReplayQueries(
        rules=[plain_rule(rule, queries[rule_stem(rule)]) for rule in plain],
        correlations=[
            correlation_rule(rule, queries[rule_stem(rule)], converted) for rule in found
        ],
        bases=[base_rule(rule, query) for rule, query in converted],
    )


def replay_plan(envs: Sequence[str] = ()) -> ReplayQueries:
    """The project's rules as replay runs them with these environments' filters (and the
    organisation's): converted once, then taken from the conversion cache until a rule,
    filter, pipeline or the converting code changes."""
    rules.check_environments(paths.FILTERS_DIR, envs, paths.ROOT)  # cached or not
    try:
        key = conversion_cache.fingerprint(envs)
    except OSError:  # a file went away as it was read: convert, keep nothing
        return replay_queries(load_rules(envs))
    with contextlib.suppress(ValueError):
        kept = conversion_cache.read(envs, key)
        if kept is not None:
            return ReplayQueries.from_json(kept)
    plan = replay_queries(load_rules(envs))
    with contextlib.suppress(OSError):
        # kept only if nothing changed while it was converted: the files read then are the
        # files fingerprinted
        if conversion_cache.fingerprint(envs) == key:
            conversion_cache.write(envs, key, plan.to_json())
    return plan


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
    with _libyaml():  # one backend for the target's correlations, as for its plain rules
        backend = backend_class(
            processing_pipeline=_pipeline(target), **dict(target.backend_options)
        )
    for rule in todo:
        where = f"{_rel(rule.source.path)}: target {target.name}"
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


def _explain(
    target: Target, pipeline: ProcessingPipeline, rule: SigmaRule, error: Exception
) -> tuple[object, str, bool]:
    """Why a rule does not convert for a target: (the file to blame, the reason, whether the
    rule or filter is simply wrong rather than beyond what the platform can express)."""
    from sigma.exceptions import SigmaTransformationError

    refused = refusal(pipeline, rule)
    if refused is not None:
        where, field, value, reason = refused
        what = f"field {field}" if value is None else f"{field} value {_shown(value)}"
        return where, f"{what}: {reason}", False
    message = _one_line(ValueError.__str__(error))  # pySigma's " in <file>" left out
    unmapped = "The following fields are not mapped: "
    if isinstance(error, SigmaTransformationError) and message.startswith(unmapped):
        fields = message.removeprefix(unmapped)
        where = _brought_by(rule, set(fields.split(", ")))
        whose = "rule" if where == rule.source.path else "filter"
        return (
            where,
            f"field {fields}: not a field of the Kubernetes audit Event (audit.k8s.io/v1) that "
            f"this target knows; write the Event's own field names in the {whose} "
            "(objectRef.resource, user.username, annotations.<key>, ...; README: Bring your own "
            "Kubernetes rules)",
            True,
        )
    pipelines = " + ".join(f"pipelines/{name}" for name in target.pipelines)
    if not isinstance(error, SigmaTransformationError):
        return rule.source.path, f"{message}; fix the rule (check it with `sigma check`)", True
    # a pipeline's own refusal, which says why and what to do
    return rule.source.path, f"(pipeline {pipelines}): {message}", False


def _refused_without_filters(backend: Backend, rule: SigmaRule) -> bool:
    """Whether the target refuses the rule as its file has it, without the environment and
    organisation filters applied: then the rule, not a filter, is beyond the platform."""
    from sigma.exceptions import SigmaError

    (plain,) = [
        r for r in sigma_rules(rules.parse(Path(rule.source.path), paths.ROOT)) if r.id == rule.id
    ]
    try:
        backend.convert_rule(copy.deepcopy(plain))
    except SigmaError:
        return True
    return False


def _detection_items(rule: SigmaRule) -> Iterator[Any]:
    """Every detection item of a rule, the filters' applied to it included."""
    from sigma.rule import SigmaDetection

    def items(detection: SigmaDetection) -> Iterator[Any]:
        for entry in detection.detection_items:
            yield from items(entry) if isinstance(entry, SigmaDetection) else (entry,)

    for detection in rule.detection.detections.values():
        yield from items(detection)


def _brought_by(rule: SigmaRule, fields: set[str]) -> object:
    """The file whose detection items test these fields: the rule's own, or the one filter
    (environment or organisation) that alone brings them."""
    sources = {
        item.source.path if item.source else rule.source.path
        for item in _detection_items(rule)
        if item.field in fields
    }
    if len(sources) == 1 and rule.source.path not in sources:
        return sources.pop()
    return rule.source.path


def _one_line(error: object) -> str:
    return " ".join(str(error).split())


def refusal(
    pipeline: ProcessingPipeline, rule: SigmaRule
) -> tuple[object, str, SigmaType | None, str] | None:
    """The first detection item of the rule (its filters' included) that one of the
    pipeline's detection_item_failure items refuses, found with that item's own field name and
    value conditions: (its file, its field, the refused value or None when the field itself is
    refused, the pipeline's message); None if none does."""
    from sigma.processing.transformations import DetectionItemFailureTransformation

    failures = [
        item
        for item in pipeline.items
        if isinstance(item.transformation, DetectionItemFailureTransformation)
    ]
    for failure in failures:
        conditions = failure.detection_item_conditions
        for item in _detection_items(rule):
            try:  # on the rule as written: a condition on pipeline state cannot tell
                if not failure.match_detection_item(item):
                    continue
            except Exception:
                continue
            value = next(
                (
                    value
                    for value in item.value
                    if conditions
                    and not failure.detection_item_condition_negation
                    and all(getattr(c, "match_value", _no)(value) for c in conditions)
                ),
                None,
            )
            where = item.source or rule.source
            return where, item.field, value, failure.transformation.message
    return None


def _no(value: object) -> bool:
    return False


def _shown(value: SigmaType) -> str:
    """A refused value as the rule writes it: 'text', /regex/, a CIDR range or a number."""
    from sigma.types import SigmaRegularExpression, SigmaString

    if isinstance(value, SigmaString):
        return rules.sigma_text(value)
    if isinstance(value, SigmaRegularExpression):
        return f"/{value.regexp}/"
    return str(value)


@functools.cache
def _pipeline_yaml(name: str) -> dict:
    """A pipeline file's YAML, parsed once per run (libyaml's parser where it is built in)."""
    import yaml

    path = paths.PIPELINES_DIR / name
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
    """While a backend starts and converts, parse YAML with PyYAML's libyaml parser
    (CSafeLoader: the same constructor, so the same data) instead of its pure-Python one: the
    Sumo Logic backend parses its bundled schema, about 240 YAML documents, at start-up
    (0.37 s -> 0.04 s), and its log source mappings at its first conversion (0.15 s)."""
    import yaml

    saved = yaml.safe_load, yaml.safe_load_all
    yaml.safe_load = functools.partial(yaml.load, Loader=rules.yaml_loader())
    yaml.safe_load_all = functools.partial(yaml.load_all, Loader=rules.yaml_loader())
    try:
        yield
    finally:
        yaml.safe_load, yaml.safe_load_all = saved


@functools.cache
def _own_backends() -> dict[str, type[Backend]]:
    """This project's own backends (k8s_audit_detect/); importing them registers this
    project's YAML transformation types too."""
    import k8s_audit_detect.pipeline_types  # noqa: F401  (registers this project's YAML types)
    from k8s_audit_detect.cloudwatch import CloudWatchLogsInsightsBackend
    from k8s_audit_detect.correlation_backends import CORRELATION_BACKENDS

    return {b.identifier: b for b in (CloudWatchLogsInsightsBackend, *CORRELATION_BACKENDS)}


@functools.cache
def _installed_backends() -> dict[str, type[Backend]]:
    """pySigma's installed backend plugins, and this project's own, which win."""
    from sigma.plugins import InstalledSigmaPlugins

    # Importing a backend imports its own pipelines module, which registers the YAML
    # transformation types it brings (Loki's set_custom_attribute): backends only are enough.
    # This project's own types (gke_method_name, sigma_regex_whole_value, field_name_regex,
    # keyed_prefix_mapping, value_type) are registered by importing
    # k8s_audit_detect/pipeline_types.py, in _own_backends.
    plugins = InstalledSigmaPlugins.autodiscover(include_pipelines=False, include_validators=False)
    return {**plugins.backends, **_own_backends()}


def _backend_class(identifier: str) -> type[Backend]:
    """The backend class `sigma convert -t <identifier>` uses. One of this project's own
    or one whose package is named as it (sigma.backends.<identifier>, as pySigma's plugins
    are laid out) needs no plugin discovery, which imports every installed backend (0.1 s of
    replay's start-up)."""
    backends = _own_backends()
    if identifier not in backends:  # a backend package named as its identifier has it
        with contextlib.suppress(ImportError):
            module = importlib.import_module(f"sigma.backends.{identifier}")
            backends = getattr(module, "backends", {})
    if identifier not in backends:
        backends = _installed_backends()
    if identifier not in backends:
        raise UserError(
            f"pySigma backend '{identifier}' is not installed; "
            "run `pip install -r requirements.txt`"
        )
    return backends[identifier]


def render(
    targets: Iterable[Target],
    envs: Sequence[str] = (),
    unavailable: dict[tuple[str, str], str] | None = None,
    *,
    org: bool = True,
) -> dict[Path, str]:
    """Every output file and its content, in memory: nothing is written here. Without envs,
    each target's query for the rule alone (queries/<target>/<rule>.<ext>) and for each
    environment (queries/<target>/<env>/<rule>.<ext>), the deployable artifacts built from
    them, and a rule card per rule; with envs, for that set of them. A rule a target cannot
    express (convert_target) has no file there, and is recorded in `unavailable` as
    {(target, rule file stem): why}; a rule no target can express is an error. With
    org=False, without the organisation's filters (sigma/filters/org/): the files as this
    repository ships them, whatever a fork adds there (what the tests pin)."""
    targets = list(targets)
    unavailable = {} if unavailable is None else unavailable
    collections: dict[tuple[str, ...], SigmaCollection] = {}
    converted: dict[tuple[str, tuple[str, ...]], list[tuple[SigmaRule, str]]] = {}
    files: dict[Path, str] = {}
    for target in targets:
        for variant in target.variants(envs):
            if variant not in collections:
                collections[variant] = load_rules(variant, org=org)
                _check_unique_stems(collections[variant])
            folder = paths.QUERIES_DIR / target.name / "+".join(variant)
            refused: dict[str, str] = {}
            queries = convert_target(target, collections[variant], refused)
            unavailable |= {(target.name, stem): why for stem, why in refused.items()}
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
                folder = paths.QUERIES_DIR / artifact.name / "+".join(variant)
                # a platform-tied target's environment is its platform, not a variant of it
                tied = TARGETS_BY_NAME[target_name].environments is not None
                options = {"name": artifact.name, "variant": () if tied else variant}
                options |= artifact.options
                for name, content in artifact.build(pairs, options).items():
                    files[folder / name] = content.rstrip("\n") + "\n"
    for collection in collections.values():
        for rule in output_rules(collection):
            nowhere = [t.name for t in targets if (t.name, rule_stem(rule)) in unavailable]
            if nowhere and len(nowhere) == len(targets):
                why = unavailable[nowhere[0], rule_stem(rule)]
                raise UserError(
                    f"{_rel(rule.source.path)}: no target can express this rule ({nowhere[0]}: "
                    f"{why}); change the rule"
                )
    if not envs and len(targets) == len(TARGETS):
        files |= rule_cards(converted, unavailable)
    return files


def rule_cards(
    converted: dict[tuple[str, tuple[str, ...]], list[tuple[SigmaRule, str]]],
    unavailable: dict[tuple[str, str], str],
) -> dict[Path, str]:
    """queries/cards/<rule>.md: each target's query (the rule alone, or a platform-tied
    target's environment) with what verified it, and the environments' filters."""
    envs = []
    for env in environments():
        files = rules.rule_files(paths.FILTERS_DIR / env)
        parsed = [(rules.parse(p, paths.ROOT).filters[0], _rel(p)) for p in files]
        titles = [(f.title, path, _filter_refs(f)) for f, path in parsed]
        envs.append((env, titles))
    corpus = paths.ROOT / "tests" / "data" / "corpus" / "public_audit_events.jsonl"
    public = len(corpus.read_text(encoding="utf-8").splitlines()) if corpus.is_file() else 0
    own = len(list((paths.ROOT / "tests" / "events").rglob("*.json")))
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
        missing = [
            (t.name, unavailable[t.name, stem]) for t in TARGETS if (t.name, stem) in unavailable
        ]
        if artifacts.is_correlation(rule):  # what a target's correlation support lacks
            limits = [(t, correlations.limit(dict(t.correlation_limits), rule)) for t in TARGETS]
            missing += [(t.name, f"correlation {why}") for t, why in limits if why is not None]
        proof = sequence_evidence if artifacts.is_correlation(rule) else evidence
        cards[paths.QUERIES_DIR / "cards" / f"{stem}.md"] = artifacts.rule_card(
            rule, rows, envs, proof, missing
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


def write_files(
    files: dict[Path, str], prune: Path | None = None, private: bool = False
) -> list[Path]:
    """The one place that writes, all or nothing; with prune, stale files there are removed.

    Every changed file is first written in full to a temporary file beside it, with the mode
    the umask gives new files (private: readable and writable by the user only); the folders
    of stale files are checked the same way. Only when
    all of that succeeded are the files moved into place and stale files removed. Nothing is
    written below a symbolic link inside queries/ (it could lead out of the tree). Returns the
    paths whose content changed.
    """
    for path in files:
        link = _symlink_in(path)
        if link is not None:
            raise UserError(
                f"{_rel(link)} is a symbolic link (to {os.readlink(link)}); generated files "
                f"are written only inside {_rel(paths.QUERIES_DIR)}/: replace it with a folder"
            )
    changed = {
        path: content.encode("utf-8")
        for path, content in sorted(files.items())
        if path.is_symlink() or not path.is_file() or path.read_bytes() != content.encode("utf-8")
    }
    stale = sorted(set(_generated_files(prune)) - set(files)) if prune and prune.is_dir() else []
    mode = 0o600 if private else 0o666 & ~_umask()
    staged: list[tuple[Path, Path]] = []  # (temporary file, its final path)
    made: list[Path] = []  # folders created here
    folder = paths.QUERIES_DIR
    try:
        for path, data in changed.items():
            folder = path.parent
            _make_folders(folder, made)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
            staged.append((Path(tmp), path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, mode)
        for folder in sorted({path.parent for path in stale}):
            fd, probe = tempfile.mkstemp(prefix=".probe.", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except BaseException as error:  # Ctrl-C too: no temporary file is left behind
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for made_folder in reversed(made):
            with contextlib.suppress(OSError):
                made_folder.rmdir()
        if not isinstance(error, OSError):
            raise
        raise UserError(
            f"{_rel(folder)}: cannot write there ({error.strerror}); nothing was written: "
            "make it writable and run again"
        ) from error
    moved = 0
    try:
        for tmp, path in staged:
            os.replace(tmp, path)
            moved += 1
    except BaseException as error:
        for tmp, _ in staged[moved:]:
            tmp.unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise
        path = staged[moved][1]
        raise UserError(
            f"{_rel(path)}: cannot be replaced ({error.strerror}); "
            f"{moved} of {len(staged)} changed files were written: fix it and run again"
        ) from error
    for path in stale:
        path.unlink()
    return [*changed, *stale]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_folders(folder: Path, made: list[Path]) -> None:
    """Create folder and its missing parents (modes from the umask), noting each."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir()
        made.append(new)


def _symlink_in(path: Path) -> Path | None:
    """The first folder below queries/ on the way to path that is a symbolic link."""
    if not path.is_relative_to(paths.QUERIES_DIR):
        return None
    folder = paths.QUERIES_DIR
    for part in path.relative_to(paths.QUERIES_DIR).parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            return folder
    return None


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

    def as_json(self, regenerate: str = "python convert.py") -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "checked": self.checked,
                "missing": self.missing,
                "changed": sorted(self.changed),
                "stale": self.stale,
                "fix": None if self.ok else f"run `{regenerate}` and commit queries/",
            },
            indent=2,
        )


def check_files(files: dict[Path, str], stale_in: Path | None) -> CheckResult:
    """Compare the files as generated with those committed; with stale_in, files there that
    nothing generates count as differences too."""
    result = CheckResult(checked=len(files))
    for path, content in sorted(files.items()):
        rel = _rel(path)
        link = _symlink_in(path) or (path if path.is_symlink() else None)
        if link is not None:  # never read (or print) what a link leads to
            result.changed[rel] = [
                f"{rel}: {_rel(link)} is a symbolic link; generated files are regular files "
                "inside queries/ (not shown: it may lead out of the tree)"
            ]
            continue
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


def build_parser(prog: str = "convert.py") -> argparse.ArgumentParser:
    import textwrap

    run = "python convert.py" if prog == "convert.py" else prog
    examples = [
        ("", "write every target's queries and artifacts under queries/"),
        ("--check", "write nothing; exit 1 with a diff if queries/ is out of date"),
        ("-t splunk --stdout", "print the files -t splunk would write"),
        ("-t splunk --env eks", "the Splunk files with EKS's filters"),
        ("--sigma-cli -t elastic-lucene", "the sigma-cli command for a target"),
        ("replay audit.log", "run the rules over an audit log: alerts as JSON lines"),
    ]
    width = max(len(f"{run} {args}") for args, _ in examples) + 2
    envs = environments()
    epilog = "\n".join(
        [
            "examples:",
            *(f"  {f'{run} {args}'.strip():<{width}}{what}" for args, what in examples),
            "",
            textwrap.fill(
                "targets: " + ", ".join(t.name for t in TARGETS) + " (--list describes them)",
                width=92,
                subsequent_indent="  ",
                break_on_hyphens=False,
            ),
            textwrap.fill(
                f"environments: {', '.join(envs) if envs else 'none (no project here)'} "
                "(filters in sigma/filters/<env>/; sigma/filters/org/ always applies)",
                width=92,
                subsequent_indent="  ",
                break_on_hyphens=False,
            ),
        ]
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [-h] [-t TARGET] [--env ENV] "
        "[--check [--format {text,json}] | --stdout | --list | --sigma-cli]\n"
        "       %(prog)s replay [--env ENV] [--format {json,table}] FILE...",
        description="Convert the Sigma rules in sigma/rules/ into every target's query and "
        "deployable artifacts (queries/<target>/), or replay Kubernetes audit logs through them.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    mode.add_argument(
        "--stdout",
        action="store_true",
        help="print the files the same run would write (queries and artifacts), each after "
        "a line `==> path <==`; write nothing",
    )
    parser.add_argument(
        "--format",
        choices=["text", "json", "table"],
        help="--check's report on stdout: a readable diff (text, the default) or one JSON "
        "object for machines: ok, checked, missing, changed, stale; for replay, see its --format",
    )
    mode.add_argument("--list", action="store_true", help="list the targets and exit")
    mode.add_argument(
        "--sigma-cli",
        action="store_true",
        help="print, for each target, the sigma-cli command that gives its query (with the "
        "package installed: its pipeline chain by name, the filters, the rules folder)",
    )
    sub = parser.add_subparsers(dest="command", title="commands", metavar="replay")
    add_replay_parser(sub, prog)
    return parser


# --- replay: its options mean the same before and after the word `replay` --------------------


def add_replay_parser(sub: argparse._SubParsersAction, prog: str) -> None:
    from k8s_audit_detect import replay as engine

    replay = sub.add_parser(
        "replay",
        prog=f"{prog} replay",
        help="run the rules over Kubernetes audit logs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every rule over Kubernetes audit logs (audit.k8s.io/v1 events) in one "
        "pass on DuckDB,\nthrough the duckdb target's queries. FILE: a file (gzip allowed), - "
        "for stdin, a FIFO or\n<(command); one event per line, audit webhook batches "
        "(EventList) per line, a JSON array\nor pretty-printed events. Alerts go to stdout, "
        "bad lines (skipped) and a summary to stderr.\n--env and --format may also stand "
        "before `replay`.",
        epilog=f"exit codes: {engine.EXIT_OK} every input read to the end (with or without "
        f"alerts); {engine.EXIT_SKIPPED} finished, but\nlines or the rest of a file were "
        f"skipped (said on stderr); {engine.EXIT_USAGE} bad usage or an input that cannot\n"
        f"be opened (nothing read); {engine.EXIT_PIPE} stdout closed (e.g. | head); "
        f"{engine.EXIT_SIGNAL + 2} Ctrl-C, {engine.EXIT_SIGNAL + 15} SIGTERM\n(the alerts "
        "until then are written).",
    )
    replay.add_argument(
        "--env",
        dest="replay_env",
        action="append",
        default=[],
        metavar="ENV",
        help="apply this environment's filters from sigma/filters/ENV/ (repeatable)",
    )
    replay.add_argument(
        "--format",
        dest="replay_format",
        choices=engine.FORMATS,
        help="alerts as JSON lines (json, the default) or a table for a person (table)",
    )
    replay.add_argument("files", nargs="+", metavar="FILE", help="audit log input")


def replay_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[str], str]:
    """replay's environments and format, given before `replay`, after it, or both; options
    that do not go with replay are refused, never ignored."""
    refused = [
        flag
        for flag, given in (
            ("-t/--target", args.target),
            ("--check", args.check),
            ("--stdout", args.stdout),
            ("--list", args.list),
            ("--sigma-cli", args.sigma_cli),
        )
        if given
    ]
    if refused:
        parser.error(f"{', '.join(refused)} does not go with replay")
    formats = {f for f in (args.format, args.replay_format) if f}
    if len(formats) > 1:
        parser.error(f"--format given twice: {' and '.join(sorted(formats))}")
    fmt = formats.pop() if formats else "json"
    if fmt == "text":
        parser.error("replay --format is json or table (text is --check's)")
    return args.env + args.replay_env, fmt


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
            ("pipelines", " ".join(f"pipelines/{name}" for name in t.pipelines)),
            ("sigma-cli", f"-t {t.backend} -p {t.sigma_cli_pipeline} (package installed)"),
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


def sigma_cli_commands(targets: Sequence[Target], envs: Sequence[str] = ()) -> str:
    """For each target, the sigma-cli command that gives its query once the package is
    installed: the target's backend, its whole pipeline chain by name, its backend options,
    the environment's and the organisation's filter folders, and the plain rules' files (the
    correlation rules convert with this project's correlation backends: convert.py). Each
    follows a comment line naming the target."""
    import shlex

    plain = sorted({_rel(r.source.path) for r in sigma_rules(load_rules()) if r._output})
    lines = []
    for target in targets:
        for variant in target.variants(envs)[:1]:  # the rule alone, or the target's own env
            words = ["sigma", "convert", "-t", target.backend, "-p", target.sigma_cli_pipeline]
            for key, value in target.backend_options:
                words += ["-O", f"{key}={value}"]
            folders = [paths.FILTERS_DIR / env for env in variant]
            if rules.rule_files(paths.FILTERS_DIR / rules.ORG):
                folders.append(paths.FILTERS_DIR / rules.ORG)
            for folder in folders:
                words += ["--filter", f"{_rel(folder)}/"]
            if any(p.suffix == ".yaml" for p in rules.rule_files(paths.ROOT / "sigma")):
                words += ["--file-pattern", "*.y*ml"]  # sigma-cli reads only *.yml otherwise
            words += plain
            lines += [f"# {target.name}: {target.platform}", shlex.join(words)]
    return "\n".join(lines)


def main(
    argv: Sequence[str] | None = None, *, prog: str = "convert.py", root: Path | None = None
) -> int:
    """Run the command line on the project in root (default: the one in the current
    directory or above it); prog names the program in messages."""
    no_project = None
    try:  # before the parser: --help lists the project's environments
        paths.use(root if root is not None else paths.find_project(Path.cwd()))
    except UserError as error:
        no_project = error
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command == "replay":
        replay_envs, replay_format = replay_options(parser, args)
    elif args.format == "table":
        parser.error("--format table goes with replay")
    elif args.format not in (None, "text") and not args.check:
        parser.error("--format goes with --check")
    regenerate = "python convert.py" if prog == "convert.py" else prog
    try:
        if no_project is not None:
            raise no_project
        if args.command == "replay":
            from k8s_audit_detect.replay import EXIT_SIGNAL, Prescan, run_replay

            if sys.stdout is None:
                raise UserError(
                    "replay: standard output is closed; the alerts go there: send it to a file "
                    f"or a pipe ({prog} replay FILE > alerts.jsonl)"
                )
            try:
                with Prescan(args.files) as prescan:  # a large file's line scan, meanwhile
                    plan = replay_plan(replay_envs)
                    return run_replay(
                        args.files,
                        plan.rules,
                        sys.stdout,
                        sys.stderr,
                        replay_format,
                        correlations=plan.correlations,
                        bases=plan.bases,
                        prescan=prescan,
                    )
            except KeyboardInterrupt:  # Ctrl-C before replay's own handling of it began
                print(f"{prog}: replay: stopped by SIGINT before reading", file=sys.stderr)
                return EXIT_SIGNAL + signal.SIGINT
        if args.list:
            print(list_targets())
            return 0
        targets = [TARGETS_BY_NAME[name] for name in args.target] if args.target else TARGETS
        rules.check_environments(paths.FILTERS_DIR, args.env, paths.ROOT)
        for target in targets if args.target else ():
            if not target.variants(args.env):
                raise UserError(
                    f"target {target.name} has nothing to convert with --env "
                    f"{' --env '.join(args.env)}: its data exists only on "
                    f"{', '.join(target.environments or ())}; use --env "
                    f"{' --env '.join(target.environments or ())} or another target"
                )
        if args.sigma_cli:
            print(sigma_cli_commands(targets, args.env))
            return 0
        unavailable: dict[tuple[str, str], str] = {}
        files = render(targets, args.env, unavailable)
        for (target_name, stem), why in sorted(unavailable.items()):
            print(f"{prog}: note: {stem}: not converted for {target_name}: {why}", file=sys.stderr)
        partial = bool(args.target or args.env)
        if args.stdout:  # each file after a header line, a blank line before the next header
            blocks = [f"==> {_rel(path)} <==\n{content}" for path, content in files.items()]
            print("\n".join(blocks), end="")
            return 0
        if args.check:
            result = check_files(files, stale_in=None if partial else paths.QUERIES_DIR)
            if args.format == "json":
                print(result.as_json(regenerate))
            elif not result.ok:
                print("\n".join(result.lines()))
            if not result.ok:
                print(
                    f"{prog} --check: {_rel(paths.QUERIES_DIR)}/ is out of date; "
                    f"run `{regenerate}` and commit queries/",
                    file=sys.stderr,
                )
                return 1
            print(f"{prog} --check: {len(files)} query files up to date", file=sys.stderr)
            return 0
        changed = write_files(files, prune=None if partial else paths.QUERIES_DIR)
        for path in files:
            print(_rel(path))
        print(f"{prog}: {len(files)} query files, {len(changed)} changed", file=sys.stderr)
        return 0
    except UserError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2


def console() -> None:
    """The installed command `k8s-audit-detect`: the project in the current directory."""
    sys.exit(main(prog="k8s-audit-detect"))
