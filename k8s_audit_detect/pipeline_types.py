"""This project's own pySigma pipeline types, for the YAML pipelines under pipelines/.

A YAML pipeline names its transformations and conditions by the keys of pySigma's registries
(sigma.processing.transformations.transformations and
sigma.processing.conditions.detection_item_conditions). Importing this module adds five keys,
as pySigma's own Loki backend adds its set_custom_attribute:

- `gke_method_name` (transformation): a test on verb, objectRef.resource, .subresource,
  .apiGroup or .apiVersion becomes a regular expression on GKE's method name.
- `sigma_regex_whole_value` (transformation): a Sigma `re` value (matched anywhere in the
  value) becomes an expression for engines whose regular expressions match the whole value.
- `field_name_regex` (transformation): rewrite field names with a regular expression, for
  the characters a query language wants escaped in a name (a / in Lucene, a key with dots
  or / in EQL).
- `keyed_prefix_mapping` (transformation): a prefix mapping that also rewrites characters in
  a map's key (annotations, user.extra: "." -> "_" where an ingest pipeline does so).
- `value_type` (detection item condition): a value's Sigma type (cidr, re, number, ...), for
  refusing what a platform cannot compare.

convert.py imports it with the backends (cli._own_backends); for sigma-cli, run
`python -m k8s_audit_detect.sigma_cli convert ...`, which imports it first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from sigma.conditions import ConditionAND, ConditionOR
from sigma.exceptions import SigmaConfigurationError, SigmaTransformationError
from sigma.processing.conditions import detection_item_conditions
from sigma.processing.conditions.base import ValueProcessingCondition
from sigma.processing.transformations import transformations
from sigma.processing.transformations.base import (
    DetectionItemTransformation,
    FieldMappingTransformationBase,
)
from sigma.processing.transformations.values import ValueTransformation
from sigma.rule import SigmaDetection, SigmaDetectionItem
from sigma.types import (
    SigmaBool,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
    SigmaType,
    SpecialChars,
)

# GKE's method name: io.k8s.<group>.<version>.<resource>[.<subresource>].<verb>, the group
# "core" or its DNS labels without k8s.io, reversed; io.k8s.<verb> for a non-resource request
# (tests/shapes.py gke_method_name cites the examples). Written in the regular expression
# syntax Lucene (Elasticsearch's regexp, ES|QL's RLIKE, EQL's regex) and Python share; each
# expression matches a whole method name.
LABEL = "[^.]+"
VERSION = "v[0-9]+((alpha|beta)[0-9]+)?"
SLOTS = {  # the rule's fields and the part of the method name each is
    "objectRef.apiGroup": "group",
    "apiGroup": "group",
    "objectRef.apiVersion": "version",
    "objectRef.resource": "resource",
    "objectRef.subresource": "subresource",
    "verb": "verb",
}
# What a null (absent) value means, as a whole method name: no subresource (or no object at
# all), the core group (or none), no object.
NULL_METHODS = {
    "subresource": rf"io\.k8s\.(({LABEL}\.)+{VERSION}\.{LABEL}\.)?{LABEL}",
    "group": rf"io\.k8s\.(core\.{VERSION}\..+|{LABEL})",
    "resource": rf"io\.k8s\.{LABEL}",
    "version": rf"io\.k8s\.{LABEL}",
}


def method_regex(parts: dict[str, str]) -> str:
    """A whole method name with the given parts (regular expressions) and any other."""
    if set(parts) <= {"verb"}:  # resource and non-resource requests alike
        return rf"io\.k8s\.({LABEL}\.)*{parts.get('verb', LABEL)}"
    group = parts["group"] + r"\." if "group" in parts else rf"({LABEL}\.)+"
    subresource = rf"(\.{LABEL})?"  # any, or none
    if "subresource" in parts:  # this one, or none when empty
        subresource = rf"\.{parts['subresource']}" if parts["subresource"] else ""
    return (
        rf"io\.k8s\.{group}{parts.get('version', VERSION)}\.{parts.get('resource', LABEL)}"
        rf"{subresource}\.{parts.get('verb', LABEL)}"
    )


def _label_regex(value: SigmaString) -> str:
    """A Sigma string as a regular expression over one dot-free label: characters escaped,
    * and ? wildcards within the label."""
    text = ""
    for part in value.s:
        if part == SpecialChars.WILDCARD_MULTI:
            text += "[^.]*"
        elif part == SpecialChars.WILDCARD_SINGLE:
            text += "[^.]"
        else:
            text += _escaped(str(part))
    return text


def _part_regex(slot: str, field: str, value: SigmaType) -> str:
    """One value of a rule's field as that part of the method name."""
    if not isinstance(value, SigmaString):
        raise SigmaTransformationError(
            f"GKE records {field} only inside its method name (event.action): a "
            f"{type(value).__name__.removeprefix('Sigma')} value cannot be tested there; "
            "use plain values, lists or * wildcards"
        )
    if slot != "group":
        return _label_regex(value)
    if value.contains_special():
        raise SigmaTransformationError(
            "GKE writes the API group reversed in its method name "
            "(rbac.authorization.k8s.io -> authorization.rbac): only exact groups can be "
            "expressed there; list the groups instead of a wildcard or other modifier"
        )
    group = str(value)
    labels = group.removesuffix(".k8s.io").split(".") if group else ["core"]
    return _escaped(".".join(reversed(labels)))


def _escaped(text: str) -> str:
    return "".join(c if c.isalnum() and c.isascii() else "\\" + c for c in text)


def _only_null(item: SigmaDetectionItem) -> bool:
    return len(item.value) == 1 and isinstance(item.value[0], SigmaNull)


def _alternatives(regexes: list[str]) -> str:
    return regexes[0] if len(regexes) == 1 else "(" + "|".join(regexes) + ")"


@dataclass
class GkeMethodNameTransformation(DetectionItemTransformation):
    """Test verb, objectRef.resource/.subresource/.apiGroup/.apiVersion on GKE's method name.

    Each such test becomes one regular expression on the method name; the tests one selection
    ANDs (verb, resource and subresource of one map) become a single expression."""

    field: str = "event.action"

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> SigmaDetectionItem | None:
        slot = SLOTS.get(detection_item.field or "")
        if slot is None:
            return None
        regexes = []
        for value in detection_item.value:
            if isinstance(value, SigmaNull) and slot in NULL_METHODS:
                regexes.append(NULL_METHODS[slot])
            else:
                part = _part_regex(slot, detection_item.field or "", value)
                regexes.append(method_regex({slot: part}))
        return self._method_item(detection_item, regexes)

    def apply_detection(self, detection: SigmaDetection) -> None:
        """Merge the method-name tests one selection ANDs into one, then convert the rest."""
        combinable = [
            (i, item, SLOTS[item.field])
            for i, item in enumerate(detection.detection_items)
            if isinstance(item, SigmaDetectionItem)
            and item.field in SLOTS
            and not item.negated
            and item.value_linking is ConditionOR
            and item.value
            and (
                all(isinstance(value, SigmaString) for value in item.value)
                or (SLOTS[item.field] == "subresource" and _only_null(item))
            )
        ]
        slots = [slot for _, _, slot in combinable]
        if (
            detection.item_linking is ConditionAND
            and len(set(slots) - {"verb", "subresource"}) > 0  # an object is named: no null
            and len(combinable) > 1
            and len(set(slots)) == len(slots)
        ):
            parts = {
                slot: _alternatives(
                    [_part_regex(slot, item.field or "", v) for v in item.value]
                    if not _only_null(item)
                    else [""]  # no subresource
                )
                for _, item, slot in combinable
            }
            first = combinable[0][0]
            merged = self._method_item(combinable[0][1], [method_regex(parts)])
            self.processing_item_applied(merged)
            drop = {i for i, _, _ in combinable} - {first}
            detection.detection_items = [
                merged if i == first else item
                for i, item in enumerate(detection.detection_items)
                if i not in drop
            ]
        super().apply_detection(detection)

    def _method_item(self, like: SigmaDetectionItem, regexes: list[str]) -> SigmaDetectionItem:
        return SigmaDetectionItem(
            self.field,
            [],
            [SigmaRegularExpression(regex) for regex in regexes],
            value_linking=like.value_linking,
            negated=like.negated,
            source=like.source,
            auto_modifiers=False,
        )


@dataclass
class SigmaRegexWholeValueTransformation(ValueTransformation):
    """Make a Sigma `re` value, matched anywhere, into one that must match the whole value."""

    flavour: Literal["lucene", "re2"] = "lucene"
    # Literal in Sigma's regular expressions (PCRE), operators in Lucene's with all flags on
    # (Elasticsearch's regexp syntax reference): escaped for Lucene.
    LUCENE_ONLY_OPERATORS: ClassVar[str] = '"<>#@&~'

    def apply_value(self, field: str, val: SigmaRegularExpression) -> SigmaRegularExpression:
        if val.flags and self.flavour == "lucene":
            raise SigmaTransformationError(
                "Lucene's regular expressions (Elasticsearch, OpenSearch) take no flags "
                "(re|i, re|m, re|s); write the cases out, e.g. [Aa]dmin"
            )
        if val.flags:
            raise SigmaTransformationError(
                "the pipeline removes the backend's (?i) to compare names exactly, which would "
                "drop this expression's flag too; write the cases out, e.g. [Aa]dmin"
            )
        text = str(val.regexp)
        body, anchors, alternation, depth, in_class, escaped = "", [], False, 0, False, False
        for position, char in enumerate(text):
            if escaped:
                if char.isascii() and char.isalnum():
                    raise SigmaTransformationError(
                        f"the escape \\{char} is not in Sigma's regular expressions (only "
                        "escaped characters, . ^ $ * + ? {n,m} [] [^] () |); write a class such "
                        "as [0-9]"
                    )
                body, escaped = body + char, False
                continue
            if char == "\\":
                body, escaped = body + char, True
                continue
            if in_class:
                in_class = char != "]"
            elif char == "[":
                in_class = True
            elif char in "()":
                depth += 1 if char == "(" else -1
            elif char == "|" and depth == 0:
                alternation = True
            elif char in "^$":
                anchors.append((position, char))
                continue
            if self.flavour == "lucene" and char in self.LUCENE_ONLY_OPERATORS:
                body += "\\"
            body += char
        start = (0, "^") in anchors
        end = (len(text) - 1, "$") in anchors
        if len(anchors) > start + end or (alternation and anchors):
            raise SigmaTransformationError(
                "this platform's regular expressions match the whole value, so only a ^ at the "
                "start and a $ at the end of an expression without a top-level | can be "
                "carried over; move the anchors out of the expression"
            )
        whole = ("" if start else ".*") + f"({body})" + ("" if end else ".*")
        return SigmaRegularExpression(whole)


@dataclass
class FieldNameRegexTransformation(FieldMappingTransformationBase):
    """Rewrite the field names a regular expression matches (re.sub with the replacement)."""

    pattern: str
    replacement: str

    def apply_field_name(self, field: str | None) -> str | None:
        if field is None or not re.search(self.pattern, field):
            return None
        return re.sub(self.pattern, self.replacement, field)


@dataclass
class KeyedPrefixMappingTransformation(FieldMappingTransformationBase):
    """Map a prefix as field_name_prefix_mapping does, rewriting characters in the rest (the
    key of a map such as annotations or user.extra, "." -> "_" where an ingest pipeline did)."""

    mapping: dict[str, str]
    key_replace: dict[str, str] = field(default_factory=dict)

    def apply_field_name(self, field: str | None) -> str | None:
        for prefix, target in self.mapping.items():
            if field is not None and field.startswith(prefix):
                key = field.removeprefix(prefix)
                for old, new in self.key_replace.items():
                    key = key.replace(old, new)
                return target + key
        return None


@dataclass
class ValueTypeCondition(ValueProcessingCondition):
    """Match values by their Sigma type: string, wildcard_only, number, bool, null, re,
    re_flags, cidr, cidr_ipv6, compare, exists, fieldref."""

    types: list[str] = field(default_factory=list)
    TYPES: ClassVar[dict[str, type[SigmaType]]] = {
        "string": SigmaString,
        "number": SigmaNumber,
        "bool": SigmaBool,
        "null": SigmaNull,
        "re": SigmaRegularExpression,
        "cidr": SigmaCIDRExpression,
        "compare": SigmaCompareExpression,
        "exists": SigmaExists,
        "fieldref": SigmaFieldReference,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.types) - {*self.TYPES, "wildcard_only", "cidr_ipv6", "re_flags"}
        if unknown:
            raise SigmaConfigurationError(f"value_type: unknown types {sorted(unknown)}")

    def match_value(self, value: SigmaType) -> bool:
        for name in self.types:
            if name == "wildcard_only":
                if isinstance(value, SigmaString) and all(
                    isinstance(part, SpecialChars) for part in value.s
                ):
                    return True
            elif name == "re_flags":
                if isinstance(value, SigmaRegularExpression) and value.flags:
                    return True
            elif name == "cidr_ipv6":
                if isinstance(value, SigmaCIDRExpression) and value.network.version == 6:
                    return True
            elif isinstance(value, self.TYPES[name]):
                return True
        return False


# The registration: explicit, once per process (importing twice assigns the same classes).
transformations["gke_method_name"] = GkeMethodNameTransformation  # type: ignore[index]
transformations["field_name_regex"] = FieldNameRegexTransformation  # type: ignore[index]
transformations["keyed_prefix_mapping"] = KeyedPrefixMappingTransformation  # type: ignore[index]
transformations["sigma_regex_whole_value"] = SigmaRegexWholeValueTransformation  # type: ignore[index]
detection_item_conditions["value_type"] = ValueTypeCondition  # type: ignore[index]

__all__ = [
    "FieldNameRegexTransformation",
    "GkeMethodNameTransformation",
    "KeyedPrefixMappingTransformation",
    "SigmaRegexWholeValueTransformation",
    "ValueTypeCondition",
]
