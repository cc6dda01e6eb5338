"""Sigma correlation rules: which correlation features a target can express, and converting one
correlation rule (with the base rules it references) for a target.

A correlation needs its type (event_count, value_count, temporal, temporal_ordered) and, when
it joins rules on differently named fields, `aliases`. Each target declares in targets.py the
backend that converts its correlations and what it cannot express, with why; a correlation
that needs any of those is left out for that target (README, --list and the rule card say
so), anything else that fails to convert is an error.

pySigma's strict_field_mapping_failure checks plain rules only: a correlation's group-by,
alias and counted fields pass unmapped, and the query would silently group by a field the
platform does not have. `unmapped_fields` is that check for correlations.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sigma.collection import SigmaCollection
    from sigma.conversion.base import Backend
    from sigma.correlations import SigmaCorrelationRule
    from sigma.processing.pipeline import ProcessingPipeline
    from sigma.rule import SigmaRule

ALL = "all"  # a target's limit on every correlation (its backend has no correlation support)


def correlation_rules(collection: SigmaCollection) -> list[SigmaCorrelationRule]:
    from sigma.correlations import SigmaCorrelationRule

    return [rule for rule in collection.rules if isinstance(rule, SigmaCorrelationRule)]


def features(rule: SigmaCorrelationRule) -> list[str]:
    """What a correlation needs from a target: its type, and aliases if it has any."""
    return [rule.type.name.lower(), *(["aliases"] if len(rule.aliases) else [])]


def limit(limits: dict[str, str], rule: SigmaCorrelationRule) -> str | None:
    """Why a target with these limits cannot express this correlation, or None if it can."""
    if ALL in limits:
        return limits[ALL]
    for feature in features(rule):
        if feature in limits:
            return f"{feature}: {limits[feature]}"
    return None


def base_rules(rule: SigmaCorrelationRule) -> Iterator[SigmaRule]:
    """The rules a correlation references, nested correlations' rules included."""
    from sigma.correlations import SigmaCorrelationRule

    for reference in rule.referenced_rules:
        if isinstance(reference.rule, SigmaCorrelationRule):
            yield from base_rules(reference.rule)
        yield reference.rule  # type: ignore[misc]


def convert(backend: Backend, rule: SigmaCorrelationRule) -> tuple[str, list[str]]:
    """The correlation's query, converted with its base rules in a collection of their own
    (one correlation a backend cannot convert aborts a whole collection), and the fields its
    group-by, aliases and condition use that the backend's pipeline does not map."""
    from sigma.collection import SigmaCollection

    unmapped = unmapped_fields(rule, backend.processing_pipeline)
    # pipelines change the rules they process: a deep copy of each (rules an environment's
    # filter was applied to share its detection objects), without what links it to other
    # rules (back-references, referenced rules): the collection resolves those anew
    bases = list(base_rules(rule))
    copies = [copy.deepcopy(base, {id(base._backreferences): []}) for base in bases]
    unlinked: dict[int, Any] = {id(base): None for base in bases}
    copies.append(copy.deepcopy(rule, unlinked | {id(rule._backreferences): []}))
    converted = backend.convert(SigmaCollection(copies, resolve_references=True))
    queries = converted if isinstance(converted, list) else [converted]
    return "\n".join(str(query) for query in queries), unmapped


def correlation_fields(rule: SigmaCorrelationRule) -> list[str]:
    """The fields a correlation groups by (aliases' names aside), joins on and counts."""
    from sigma.correlations import SigmaCorrelationCondition

    aliases = {alias.alias for alias in rule.aliases}
    used = [field for field in rule.group_by if field not in aliases]
    used += [field for alias in rule.aliases for field in alias.mapping.values()]
    if isinstance(rule.condition, SigmaCorrelationCondition) and rule.condition.fieldref:
        refs = rule.condition.fieldref
        used += refs if isinstance(refs, list) else [refs]
    return list(dict.fromkeys(used))


def unmapped_fields(rule: SigmaCorrelationRule, pipeline: ProcessingPipeline) -> list[str]:
    """The group-by, alias and condition fields of a correlation (before conversion) that no
    field mapping of the pipeline maps: pySigma's strict_field_mapping_failure checks plain
    rules only, and its field-mapping tracking covers detection items only."""
    # the mappings (field_name_mapping, its prefix form and this project's keyed one), not
    # the transformations that rewrite every name (a suffix, a regular expression)
    mappings = [item for item in pipeline.items if hasattr(item.transformation, "mapping")]
    return [
        field
        for field in correlation_fields(rule)
        if not any(
            item.match_field_name(field) and item.transformation.apply_field_name(field)
            for item in mappings
        )
    ]
