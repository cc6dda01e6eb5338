"""Loading the Sigma rules with their environment and organisation filters.

Rules live in sigma/rules/, one folder of Sigma filters per environment in
sigma/filters/<env>/, and an organisation's own filters in sigma/filters/org/ (applied to
every query). All of them are loaded into one pySigma collection, which applies each filter
to the rules it names exactly once. A filter that names no known rule, or whose logsource is
not its rules' (pySigma would ignore it silently), is an error.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from k8s_audit_detect import UserError

if TYPE_CHECKING:
    from sigma.collection import SigmaCollection
    from sigma.rule import SigmaRule
    from sigma.types import SigmaString

    from sigma.filters import SigmaFilter

ORG = "org"  # sigma/filters/org/: the organisation's own filters, always applied


def environments(filters_dir: Path) -> list[str]:
    """The environments that have filters: one folder each under sigma/filters/."""
    if not filters_dir.is_dir():
        return []
    return sorted(p.name for p in filters_dir.iterdir() if p.is_dir() and p.name != ORG)


def rule_files(folder: Path) -> list[Path]:
    """The Sigma files in a folder and below it: *.yml and *.yaml, sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for pattern in ("*.yml", "*.yaml") for p in folder.rglob(pattern))


def check_environments(filters_dir: Path, envs: Sequence[str], root: Path | None) -> None:
    """Each environment named has its folder of filters."""
    known = environments(filters_dir)
    for env in envs:
        if env not in known:
            raise UserError(
                f"unknown environment '{env}' (available: {', '.join(known) or 'none'}); "
                f"environment filters live in {relative(filters_dir, root)}/<env>/"
            )


def load_rules(
    rules_dir: Path,
    filters_dir: Path,
    envs: Sequence[str] = (),
    root: Path | None = None,
    *,
    org: bool = True,
) -> SigmaCollection:
    """Parse every rule, the filters of the chosen environments and (unless org is False)
    the organisation's filters into one collection (the filters applied to their rules)."""
    from sigma.collection import SigmaCollection

    check_environments(filters_dir, envs, root)
    rule_paths = rule_files(rules_dir)
    if not rule_paths:
        raise UserError(f"no rules in {relative(rules_dir, root)}/; add a Sigma rule (.yml)")
    filter_paths = [p for env in envs for p in rule_files(filters_dir / env)]
    if org:
        filter_paths += rule_files(filters_dir / ORG)
    rules = [parse(path, root) for path in rule_paths]
    filters = [parse(path, root) for path in filter_paths]
    # every environment's filters, loaded or not: an id must name one rule or filter
    check_unique_ids(rule_paths + rule_files(filters_dir), root)
    check_filters(filters, [r for part in rules for r in part.rules], root)
    collection = SigmaCollection.merge(rules + filters)
    for rule in collection.rules:
        for error in rule.errors:
            where = relative(getattr(error, "source", None) or rule.source, root)
            raise UserError(f"{where}: {error}; fix the rule (check it with `sigma check`)")
    for rule in sigma_rules(collection):
        check_logsource(rule, root)
    return collection


# The logsource categories a Kubernetes audit rule has: none, or `application` as SigmaHQ's
# rules/application/kubernetes/audit/ write it (the pipelines match product and service).
AUDIT_CATEGORIES = (None, "application")


def check_logsource(rule: SigmaRule, root: Path | None) -> None:
    """A rule's logsource category is none or application; the product and service are the
    pipelines' to refuse, in their own words."""
    category = rule.logsource.category
    if category not in AUDIT_CATEGORIES:
        raise UserError(
            f"{relative(rule.source, root)}: logsource category '{category}' is not one of a "
            "Kubernetes audit rule (none, or application as SigmaHQ writes them); write "
            "`logsource: {product: kubernetes, service: audit}`"
        )


def parse(path: Path, root: Path | None) -> SigmaCollection:
    """One YAML file as a pySigma collection (what SigmaCollection.from_yaml does, with
    PyYAML's libyaml parser where it is built in); a YAML error names its line."""
    import yaml
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaRuleLocation

    where = relative(path, root)
    if path.is_dir():
        raise UserError(
            f"{where}: a directory, not a Sigma file; rename it (rules and filters are "
            "*.yml or *.yaml files)"
        )
    try:
        text = path.read_text(encoding="utf-8")
        _refuse_aliases(text, path, root)
        documents = [d for d in yaml.load_all(text, Loader=yaml_loader()) if d is not None]
    except OSError as error:
        raise UserError(f"{where}: cannot read it ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise UserError(f"{where}: not UTF-8 text ({error.reason}); save it as UTF-8") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise UserError(f"{relative(path, root)}: {problem}{at}; fix the YAML") from error
    if not documents:
        raise UserError(f"{where}: empty; write a Sigma rule or filter in it, or delete it")
    for document in documents:
        if not isinstance(document, dict):
            kind = "list" if isinstance(document, list) else "scalar"
            raise UserError(
                f"{where}: a YAML {kind}, not a Sigma rule or filter (a mapping with title, "
                "logsource and detection or filter); fix the file"
            )
    # references are resolved once every file is loaded: a correlation may name a rule of
    # another file
    return SigmaCollection.from_dicts(
        documents, collect_errors=True, source=SigmaRuleLocation(path), resolve_references=False
    )


def check_unique_ids(files: Sequence[Path], root: Path | None) -> None:
    """No two rules or filters share an id: pySigma would keep one of them and filters name
    rules by id. Only the ids are read here (files that do not parse are reported when they
    are loaded)."""
    import yaml

    seen: dict[str, Path] = {}
    for path in files:
        try:
            documents = list(yaml.load_all(path.read_text(encoding="utf-8"), yaml_loader()))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        for document in documents:
            sigma_id = document.get("id") if isinstance(document, dict) else None
            if sigma_id is None:
                continue
            first = seen.setdefault(str(sigma_id), path)
            if first != path:
                raise UserError(
                    f"{relative(path, root)}: id {sigma_id} is also the id of "
                    f"{relative(first, root)}; give each rule and filter an id of its own "
                    "(a new UUID)"
                )


def _refuse_aliases(text: str, path: Path, root: Path | None) -> None:
    """Refuse YAML aliases (*name) before anything is built from them: an alias repeats a
    node, and nested ones grow without bound (an alias bomb). The parser's events are read
    one at a time, so nothing is expanded here."""
    import yaml

    for event in yaml.parse(text, Loader=yaml_loader()):
        if isinstance(event, yaml.AliasEvent):
            mark = event.start_mark
            raise UserError(
                f"{relative(path, root)}: YAML alias *{event.anchor} at line {mark.line + 1}, "
                f"column {mark.column + 1}; write the value out instead (aliases are refused)"
            )


def yaml_loader() -> type:
    """PyYAML's safe loader, on libyaml's C parser where PyYAML was built with it."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_filters(
    filters: Sequence[SigmaCollection], rules: Sequence[SigmaRule], root: Path | None
) -> None:
    """Each filter names known rules and has their logsource; otherwise one clear error."""
    by_ref = {str(rule.id): rule for rule in rules} | {r.name: r for r in rules if r.name}
    for part in filters:
        for item in part.rules:
            raise UserError(
                f"{relative(item.source, root)}: a rule, not a Sigma filter; rules go in "
                "sigma/rules/, filters (with a `filter:` section) in sigma/filters/"
            )
        for item in part.filters:
            where = relative(item.source, root)
            for error in item.errors:
                raise UserError(f"{where}: {error}; fix the filter")
            check_exclusion(item, where)
            for field, value in filter_values(item):
                problem = value_problem(value)
                if problem:
                    raise UserError(f"{where}: {field} value {sigma_text(value)} {problem}")
            refs = item.filter.rules
            named = rules if isinstance(refs, str) else [_named(ref, by_ref, where) for ref in refs]
            for rule in named:
                if rule.logsource not in item.logsource:  # pySigma's own test
                    raise UserError(
                        f"{where}: filter logsource {_logsource(item.logsource)} does not cover "
                        f"the rule's {_logsource(rule.logsource)}, so pySigma would ignore it; "
                        "give the filter the rule's logsource"
                    )


def check_exclusion(item: SigmaFilter, where: str) -> None:
    """A filter only excludes: every selection in its condition is under a `not`. One that
    is not would narrow the rule to the events it names (pySigma ANDs it to the rule)."""
    from sigma.conditions import SigmaCondition

    for condition in item.filter.condition:
        if not _only_negated(SigmaCondition(condition, item.filter, item.source).parsed):
            raise UserError(
                f"{where}: condition '{condition}' is not an exclusion: a selection outside "
                "`not` would make the rule alert only on the events it names; write "
                "`condition: not 1 of selection*`"
            )


def _only_negated(node: object, negated: bool = False) -> bool:
    """Whether every value test in a parsed condition sits under an odd number of `not`s."""
    from sigma.conditions import ConditionNOT

    if isinstance(node, ConditionNOT):
        negated = not negated
    args = getattr(node, "args", None)
    if args is None:  # a value test (field = value, or a keyword)
        return negated
    return all(_only_negated(arg, negated) for arg in args)


def filter_values(item: SigmaFilter) -> Iterator[tuple[str, SigmaString]]:
    """(field, value) for every string value of a filter, modifiers applied."""
    from sigma.rule import SigmaDetection
    from sigma.types import SigmaString

    def walk(detection: SigmaDetection) -> Iterator[tuple[str, SigmaString]]:
        for entry in detection.detection_items:
            if isinstance(entry, SigmaDetection):
                yield from walk(entry)
                continue
            for value in entry.value:
                if isinstance(value, SigmaString):
                    yield entry.field or "keyword", value

    for detection in item.filter.detections.values():
        yield from walk(detection)


def value_problem(value: SigmaString) -> str | None:
    """Why a filter value cannot be converted exactly on every target, or None."""
    from sigma.types import SpecialChars

    parts = value.s
    if parts and all(isinstance(part, SpecialChars) for part in parts):
        return (
            "is only wildcards, so it matches every value of the field and would silence "
            "the rule; name the users (or prefixes) to trust"
        )
    for part, after in zip(parts, [*parts[1:], None], strict=True):
        if not isinstance(part, str):
            continue
        for char in part:
            if unicodedata.category(char) == "Cc" and char not in "\t\n\r":
                return (
                    f"contains the control character U+{ord(char):04X}, which several query "
                    "languages here cannot carry in a string; drop that value"
                )
        if part.endswith("\\") and isinstance(after, SpecialChars):
            return (
                "has a backslash right before a wildcard, which pySigma's pipelines cannot "
                "tell from an escaped literal * or ? (so no target could refuse or express it "
                "reliably); drop the wildcard or the backslash"
            )
    return None


def sigma_text(value: SigmaString) -> str:
    """A value as one quoted line, in Sigma's notation (\\* a literal star, * a wildcard,
    \\\\ a backslash), other characters that do not print as \\t, \\n, \\r or \\uXXXX."""
    from sigma.types import SpecialChars

    text = ""
    for part in value.s:
        if part == SpecialChars.WILDCARD_MULTI:
            text += "*"
        elif part == SpecialChars.WILDCARD_SINGLE:
            text += "?"
        elif isinstance(part, str):
            text += "".join(_shown(char) for char in part)
        else:
            text += str(part)
    return f"'{text}'"


def _shown(char: str) -> str:
    if char in "*?\\":
        return "\\" + char
    if char.isprintable():
        return char
    return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(char, f"\\u{ord(char):04x}")


def _named(ref: object, by_ref: dict[str, SigmaRule], where: str) -> SigmaRule:
    name = str(getattr(ref, "reference", ref))
    if name not in by_ref:
        raise UserError(
            f"{where}: filter names rule '{name}', which is not in sigma/rules/; "
            "use the rule's id or name"
        )
    return by_ref[name]


def sigma_rules(collection: SigmaCollection) -> list[SigmaRule]:
    """The detection rules of a collection (filters are applied to the rules they name)."""
    from sigma.rule import SigmaRule

    return [rule for rule in collection.rules if isinstance(rule, SigmaRule)]


def rule_stem(rule: SigmaRule) -> str:
    """The rule's file name without .yml: names its query files."""
    return Path(rule.source.path).stem


def relative(where: object, root: Path | None) -> str:
    """A path (or a pySigma source location) as the user sees it, relative to the repository."""
    path = getattr(where, "path", where)
    if path is None:
        return "sigma/"
    path = Path(path)
    if root is not None:
        try:
            return str(path.resolve().relative_to(root))
        except ValueError:
            pass
    return str(path)


def _logsource(logsource: object) -> str:
    parts = ("category", "product", "service")
    return ", ".join(f"{p}: {getattr(logsource, p)}" for p in parts if getattr(logsource, p))
