"""The labelled events: the public corpus (labelled in data/corpus_labels.yml) and the
hand-written cases in events/, each named for why it does or does not match."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "data" / "corpus" / "public_audit_events.jsonl"
LABELS = HERE / "data" / "corpus_labels.yml"
EVENTS = HERE / "events"
ENV_EVENTS = EVENTS / "env"


@dataclass(frozen=True)
class Case:
    id: str
    event: dict[str, Any]
    engine_exceptions: tuple[str, ...] = ()
    env: str | None = None  # a platform's own identity, from events/env/<env>/

    @property
    def label(self) -> str:
        return self.id.split("-")[-1]

    def expected(self, engine: str, variant: tuple[str, ...] = ()) -> bool:
        """Whether the engine should match under these environment filters. The label, but
        a platform identity labelled nomatch is quiet only where its environment's filters
        apply (the rule alone alerts on it), and a listed engine exception flips it."""
        if self.env is not None and self.label.startswith("nomatch_"):
            return self.env not in variant
        return self.label.startswith("match_") != (engine in self.engine_exceptions)


# How each corpus record was made (its `_source_kind`, corpus/README.md), as its case id says
# it: only `real` records are exports from running clusters.
SOURCE_KINDS = {
    "real_capture": "real",
    "vendor_test_fixture": "fixture",
    "handwritten_test_case": "handwritten",
    "doc_excerpt": "excerpt",
}


def source_kind(event: dict[str, Any]) -> str:
    return SOURCE_KINDS[event["_source_kind"]]


def corpus_events() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def default_label(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    parts = [event.get("verb") or "noverb", ref.get("resource") or "noresource"]
    if ref.get("subresource"):
        parts.append(ref["subresource"])
    return "nomatch_" + "_".join(parts)


def corpus_labels() -> dict[str, Any]:
    return yaml.safe_load(LABELS.read_text(encoding="utf-8"))


@cache
def load_cases() -> tuple[Case, ...]:
    data = corpus_labels()
    labels = {**data["match"], **data["nomatch"]}
    exceptions = data.get("engine_exceptions") or {}
    cases = [
        Case(
            f"corpus-L{n}-{source_kind(event)}-{labels.get(n) or default_label(event)}",
            event,
            tuple(engine for engine, lines in exceptions.items() if n in lines),
        )
        for n, event in enumerate(corpus_events(), start=1)
    ]
    cases += [
        Case(path.stem, json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(EVENTS.glob("*.json"))
    ]
    return tuple(cases)


def raw_event(case: Case) -> dict[str, Any]:
    """The audit Event as the API server writes it, auditID set to the case id so that every
    engine's hits name their cases (auditID is not tested by the rule; stages of one request
    are told apart by their labels)."""
    event = {k: v for k, v in case.event.items() if not k.startswith(("_", "p_"))}
    event["auditID"] = case.id
    return event


@cache
def load_env_cases() -> tuple[Case, ...]:
    """Each platform's own token minters (nomatch_*, quiet with that environment's filters)
    and look-alikes of them (match_*, alerting everywhere), from events/env/<env>/."""
    return tuple(
        Case(
            f"env-{path.parent.name}-{path.stem}",
            json.loads(path.read_text()),
            env=path.parent.name,
        )
        for path in sorted(ENV_EVENTS.glob("*/*.json"))
    )


# ---------------------------------------------------------------------------------------------
# Sequences for the correlation rules: tests/sequences/<rule>/ holds event files (JSON lines)
# named for why the rule alerts on them or not, a folder of several files read together as one
# input, and env/<env>/ those whose label holds under that environment's filters (a nomatch
# there alerts without them). expected_groups.yml names the group each alerting one alerts for.
SEQUENCES = HERE / "sequences"


@dataclass(frozen=True)
class Sequence:
    rule: str  # the correlation rule file's stem ends with it
    name: str
    files: tuple[Path, ...]
    env: str | None = None

    @property
    def id(self) -> str:
        return f"{self.env}-{self.name}" if self.env else self.name

    def events(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for path in self.files
            for line in path.read_text(encoding="utf-8").splitlines()
            if line
        ]

    def expected(self, variant: tuple[str, ...]) -> set[str]:
        """The groups (their key value) the rule alerts for under these environments."""
        alerts = self.name.startswith("match_") or (
            self.env is not None and self.env not in variant
        )
        key = f"env/{self.env}/{self.name}" if self.env else self.name
        return set(expected_groups()[self.rule][key]) if alerts else set()


@cache
def expected_groups() -> dict[str, dict[str, list[str]]]:
    return yaml.safe_load((SEQUENCES / "expected_groups.yml").read_text(encoding="utf-8"))


@cache
def load_sequences() -> tuple[Sequence, ...]:
    found = []
    for rule_dir in sorted(p for p in SEQUENCES.iterdir() if p.is_dir()):
        places = [(rule_dir, None)] + [
            (env_dir, env_dir.name) for env_dir in sorted((rule_dir / "env").glob("*"))
        ]
        for folder, env in places:
            for entry in sorted(folder.iterdir()):
                if entry.suffix == ".jsonl":
                    found.append(Sequence(rule_dir.name, entry.stem, (entry,), env))
                elif entry.is_dir() and entry.name != "env":
                    files = tuple(sorted(entry.glob("*.jsonl")))
                    found.append(Sequence(rule_dir.name, entry.name, files, env))
    return tuple(found)
