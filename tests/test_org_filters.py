"""An organisation's filter values are user input. tests/data/adversarial_org_filter.yml
excludes eleven user names full of characters that mean something in some query language;
on every engine exactly those users are quiet, their look-alikes alert, and no value breaks
out of the query it is embedded in (which would silence, or break, everything).

Each test's filter is the only organisation filter (a fork's own, in sigma/filters/org/, are
left out: the reference knows only the filter under test); the rules are the project's, a
fork's too, and the TokenRequest rule's query is the one run."""

from __future__ import annotations

import copy
import json
import re
import shutil
import unicodedata
from pathlib import Path

import pytest
import yaml
from conftest import RULE_STEM
from engines import ENGINES
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from convert import ROOT, RULES_DIR, TARGETS_BY_NAME, convert_target
from k8s_audit_detect.rules import ORG, load_rules, rule_stem, sigma_rules

HERE = Path(__file__).resolve().parent
ADVERSARIAL = HERE / "data" / "adversarial_org_filter.yml"
TEMPLATE = HERE / "events" / "match_human_user_kubectl_create_token.json"

# (case name, user name): nomatch_* are the exact users the filter lists; match_* are what a
# wildcard, a lost escape or a broken-out literal would also have excluded.
USERS = {
    "nomatch_literal_star": "deploy*bot",
    "nomatch_literal_question_mark": "q?x",
    "nomatch_double_quotes_and_spaces": 'say "hi" there',
    "nomatch_single_quote": "it's",
    "nomatch_backslash_inside": "back\\slash",
    "nomatch_backslash_at_the_end": "trail\\",
    "nomatch_close_a_double_quoted_literal": 'x") or true or ("',
    "nomatch_close_a_single_quoted_literal": "x' OR '1'='1",
    "nomatch_slashes": "a/b/c",
    "nomatch_colon_and_space": "col:on user",
    "nomatch_semicolon_pipe_backtick": "semi;colon|pipe`tick",
    "match_star_is_not_a_wildcard": "deploy-evil-bot",
    "match_question_mark_is_not_a_wildcard": "qax",
    "match_quotes_are_not_dropped": "say hi there",
    "match_backslash_is_not_dropped": "backslash",
    "match_trailing_backslash_is_not_dropped": "trail",
    "match_an_ordinary_attacker": "mallory@example.com",
    "match_regex_metacharacter_is_literal": "a.b.c",
    "match_prefix_of_a_listed_user": "deploy",
}


def event(name: str, user: str) -> dict:
    e = copy.deepcopy(json.loads(TEMPLATE.read_text()))
    e["auditID"] = name
    e["user"]["username"] = user
    return e


# EQL has no exact form for a literal * or ?: its pipeline refuses such a value (tested
# below); its engines run the filter without those two users.
NO_LITERAL_WILDCARDS = {
    e for e, (target, _) in ENGINES.items() if TARGETS_BY_NAME[target].backend == "eql"
}
LITERAL_WILDCARD_USERS = {"nomatch_literal_star", "nomatch_literal_question_mark"}


def filters_with(tmp: Path, filter_text: str, name: str = ADVERSARIAL.name) -> Path:
    """sigma/filters/ with this filter as the organisation's only one."""
    folder = tmp / "filters"
    shutil.copytree(ROOT / "sigma" / "filters", folder, ignore=shutil.ignore_patterns(ORG))
    (folder / ORG).mkdir()
    (folder / ORG / name).write_text(filter_text, encoding="utf-8")
    return folder


def token_rule_query(target_name: str, folder: Path, variant: tuple[str, ...] | None = None):
    """The TokenRequest rule and its query for the target, every rule loaded with the filters
    in folder (the target's first variant by default)."""
    target = TARGETS_BY_NAME[target_name]
    envs = target.variants()[0] if variant is None else variant
    collection = load_rules(RULES_DIR, folder, envs, ROOT)
    (rule,) = [r for r in sigma_rules(collection) if rule_stem(r) == RULE_STEM]
    return rule, convert_target(target, collection, with_correlations=False)[RULE_STEM]


def without_literal_wildcards(text: str) -> str:
    return text.replace("      - 'deploy\\*bot'\n", "").replace("      - 'q\\?x'\n", "")


@pytest.fixture(scope="module")
def hits(tmp_path_factory):
    found: dict[str, set[str]] = {}

    def run(engine: str) -> set[str]:
        if engine not in found:
            target_name, runner = ENGINES[engine]
            text = ADVERSARIAL.read_text(encoding="utf-8")
            if engine in NO_LITERAL_WILDCARDS:
                text = without_literal_wildcards(text)
            folder = filters_with(tmp_path_factory.mktemp(engine), text)
            rule, query = token_rule_query(target_name, folder)
            events = [event(name, user) for name, user in USERS.items()]
            found[engine] = runner(query, rule, events, tmp_path_factory.mktemp(engine))
        return found[engine]

    return run


@pytest.mark.parametrize("name", USERS)
@pytest.mark.parametrize("engine", ENGINES)
def test_org_filter_values_match_literally(engine: str, name: str, hits) -> None:
    matched = name in hits(engine)
    listed = name.startswith("nomatch_")
    if engine in NO_LITERAL_WILDCARDS and name in LITERAL_WILDCARD_USERS:
        listed = False  # not in the filter this engine ran: the user alerts
    assert matched == (not listed), (
        f"{engine}: user {USERS[name]!r} {'alerted' if matched else 'was excluded'}"
    )


@pytest.mark.parametrize("target", sorted({ENGINES[e][0] for e in NO_LITERAL_WILDCARDS}))
def test_eql_refuses_a_literal_wildcard_value_with_a_clear_error(target: str, tmp_path) -> None:
    from k8s_audit_detect import UserError

    folder = filters_with(tmp_path, ADVERSARIAL.read_text(encoding="utf-8"))
    t = TARGETS_BY_NAME[target]
    collection = load_rules(RULES_DIR, folder, t.variants()[0], ROOT)
    with pytest.raises(UserError, match=r"literal \* or \? exactly"):
        convert_target(t, collection)


def test_splunk_quotes_every_hostile_value(tmp_path) -> None:
    """No engine runs SPL: the exclusion is pinned, reviewed. Every value stays inside its
    double quotes (\\" and \\\\ escaped); `q?x` needs no escape (? is no wildcard in SPL); a
    backtick inside quotes is no macro. The literal star is refused (below). SPL's IN ignores
    case."""
    text = ADVERSARIAL.read_text(encoding="utf-8").replace("      - 'deploy\\*bot'\n", "")
    folder = filters_with(tmp_path, text)
    _, query = token_rule_query("splunk", folder, ())
    assert (
        'NOT (user.username IN ("q?x", "say \\"hi\\" there", "it\'s", '
        '"back\\\\slash", "trail\\\\", "x\\") or true or (\\"", "x\' OR \'1\'=\'1", "a/b/c", '
        '"col:on user", "semi;colon|pipe`tick")) | table'
    ) in query


# ---------------------------------------------------------------------------------------------
# Differential: generated filter values and user names, every engine against a Python reference.
# A value is a list of tokens: a literal character, or one of Sigma's wildcards. The reference
# is Sigma's meaning: exact, case-sensitive equality, * any run of characters (line breaks
# too), ? any one character. Each batch is one filter and one engine run.

Token = tuple[str, str]  # ("lit", char), ("any", "*") or ("one", "?")
ANY: Token = ("any", "*")
ONE: Token = ("one", "?")
WHITESPACE = " \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2003\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
RESERVED = "\"'`\\*?|$;:/+-=&!(){}[]<>^~%_.,@#"
LETTERS = "aAsSkKiI0"
# Cyrillic a and dze, fullwidth s, dotless i, dotted I, Kelvin sign, long s, sharp s,
# combining acute, zero-width space, BOM: characters that look like, or case-fold to, others.
LOOKALIKES = "\u0430\u0455\uff53\u0131\u0130\u212a\u017f\u00df\u0301\u200b\ufeff"
CONTROLS = "\x01\x1f\x7f"
ALPHABET = WHITESPACE + RESERVED + LETTERS + LOOKALIKES + CONTROLS
SELECTIONS = {"": "exact", "|startswith": "prefix", "|endswith": "suffix", "|contains": "infix"}
CANARY = "canary-listed-user"


def with_modifier(modifier: str, tokens: list[Token]) -> list[Token]:
    """The value as pySigma holds it after the modifier (which adds no * next to a *)."""
    before = [ANY] if modifier in ("|endswith", "|contains") and tokens[0] != ANY else []
    after = [ANY] if modifier in ("|startswith", "|contains") and tokens[-1] != ANY else []
    return before + tokens + after


def sigma_yaml_text(tokens: list[Token]) -> str:
    """The value as a user writes it in the filter: \\* \\? \\\\ for literal ones."""
    return "".join("\\" + c if kind == "lit" and c in "*?\\" else c for kind, c in tokens)


def shown(tokens: list[Token]) -> str:
    """How an error line shows the value (k8s_audit_detect.rules.sigma_text's notation, written
    again)."""
    out = ""
    for kind, c in tokens:
        if kind != "lit":
            out += c
        elif c in "*?\\":
            out += "\\" + c
        elif c.isprintable():
            out += c
        else:
            out += {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(c, f"\\u{ord(c):04x}")
    return f"'{out}'"


def reference_excludes(tokens: list[Token], name: str) -> bool:
    pattern = "".join(
        re.escape(c) if kind == "lit" else (".*" if kind == "any" else ".") for kind, c in tokens
    )
    return re.fullmatch(pattern, name, re.DOTALL) is not None


def refused_everywhere(tokens: list[Token]) -> bool:
    """k8s_audit_detect/rules.py's refusals: only wildcards, a control character other than tab
    and line breaks, a literal backslash right before a wildcard."""
    if all(kind != "lit" for kind, _ in tokens):
        return True
    if any(
        kind == "lit" and unicodedata.category(c) == "Cc" and c not in "\t\n\r"
        for kind, c in tokens
    ):
        return True
    return any(
        a == ("lit", "\\") and b[0] != "lit" for a, b in zip(tokens, tokens[1:], strict=False)
    )


def refused_by(engine: str, tokens: list[Token]) -> bool:
    """What each engine's target documents as refused (its pipeline's detection_item_failure)."""
    target = ENGINES[engine][0]
    if "eql" in target:  # no escape for a literal * or ?; its ? wildcard unverifiable here
        return any(t in (("lit", "*"), ("lit", "?"), ONE) for t in tokens)
    if target.startswith("sentinel-"):  # the Kusto backend's ? and inner * are not exact
        inner = tokens[1:-1]
        return ONE in tokens or ANY in inner
    if "lucene" in target or target == "opensearch":  # f:>v is a range; < and > unescapable
        exact = ANY not in tokens and ONE not in tokens
        return exact and bool(tokens) and tokens[0] in (("lit", "<"), ("lit", ">"))
    return False


def filter_document(values: list[tuple[str, list[Token]]]) -> str:
    detection: dict[str, object] = {"rules": ["kubernetes_serviceaccount_token_requested"]}
    for modifier, name in SELECTIONS.items():
        listed = [sigma_yaml_text(tokens) for m, tokens in values if m == modifier]
        if listed:
            detection[f"selection_{name}"] = {f"user.username{modifier}": listed}
    detection["condition"] = "not 1 of selection_*"
    document = {
        "title": "Generated hostile values",
        "id": "0f0e0d0c-0b0a-4909-8807-060504030201",
        "status": "test",
        "logsource": {"product": "kubernetes", "service": "audit"},
        "filter": detection,
    }
    text = yaml.safe_dump(document, width=10**6, sort_keys=False)  # non-ASCII as \\u escapes
    assert yaml.safe_load(text) == document
    return text


def convert_refusing(
    engine: str, values: list[tuple[str, list[Token]]], tmp: Path
) -> tuple[str, object, list[tuple[str, list[Token]]], list[tuple[str, list[Token]]]]:
    """Convert the filter for the engine's target; each refusal must be one line naming the
    filter file and the value, and the run goes on without that value. Returns the query, the
    rule, the values kept and those refused."""
    from k8s_audit_detect import UserError

    target = TARGETS_BY_NAME[ENGINES[engine][0]]
    kept, refused = list(values), []
    for attempt in range(len(values) + 1):
        folder = filters_with(tmp / f"attempt{attempt}", filter_document(kept), "generated.yml")
        path = folder / ORG / "generated.yml"
        try:
            rule, query = token_rule_query(target.name, folder)
            return query, rule, kept, refused
        except UserError as error:
            message = str(error)
            named = [v for v in kept if f" value {shown(with_modifier(*v))}" in message]
            assert named and message.startswith(str(path)), message
            assert len(message.splitlines()) == 1, message
            kept.remove(named[0])
            refused.append(named[0])
    raise AssertionError("unreachable: every value was refused")


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[tuple[str, list[Token]]], list[str]]:
    """About 30 filter values and 150 user names: each value's own users, their case and
    look-alike variants, the pieces a query parser would split them into, and neighbours."""
    char = st.sampled_from(ALPHABET)
    token = st.one_of(
        char.map(lambda c: ("lit", c)), st.sampled_from([ANY, ONE, ("lit", "*"), ("lit", "?")])
    )
    values = draw(
        st.lists(
            st.tuples(st.sampled_from(list(SELECTIONS)), st.lists(token, min_size=1, max_size=6)),
            min_size=30,
            max_size=30,
        )
    )
    values.append(("", [("lit", c) for c in CANARY]))
    rnd = draw(st.randoms(use_true_random=False))

    def fill(tokens: list[Token]) -> str:
        parts = []
        for kind, c in tokens:
            if kind == "lit":
                parts.append(c)
            else:
                size = 1 if kind == "one" else rnd.randint(0, 3)
                parts.append("".join(rnd.choice(ALPHABET) for _ in range(size)))
        return "".join(parts)

    names: set[str] = set()
    for modifier, tokens in values:
        name = fill(with_modifier(modifier, tokens))
        lookalike = name.translate(str.maketrans("asSKi", "\u0430\u0455\uff53\u212a\u0131"))
        names |= {name, name.swapcase(), name.upper(), name.lower(), lookalike}
        names |= {name + rnd.choice(ALPHABET), rnd.choice(ALPHABET) + name, name[1:], name[:-1]}
        names |= {sigma_yaml_text(tokens), name.strip()}
        names |= set(re.split(r"[\s\\*?]+", name))
    names |= {"".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(1, 6))) for _ in range(20)}
    return values, sorted(n for n in names if n and not n.startswith("system:"))


@pytest.mark.parametrize("engine", ENGINES)
@settings(
    max_examples=3,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)
@given(batch=batches())
def test_generated_values_exclude_exactly_what_the_reference_excludes(
    engine: str, batch, tmp_path_factory
) -> None:
    values, names = batch
    tmp = tmp_path_factory.mktemp(engine)
    query, rule, kept, refused = convert_refusing(engine, values, tmp)
    for value in refused:
        assert refused_everywhere(with_modifier(*value)) or refused_by(
            engine, with_modifier(*value)
        ), f"{engine} refused {value}, which it can express"
    for value in kept:
        tokens = with_modifier(*value)
        assert not refused_everywhere(tokens) and not refused_by(engine, tokens), (
            f"{engine} converted {value}, which it must refuse"
        )
    events = [event(f"u{n}", name) for n, name in enumerate(names)]
    alerted = ENGINES[engine][1](query, rule, events, tmp)
    wrong = [
        (name, "alerted" if f"u{n}" in alerted else "was excluded")
        for n, name in enumerate(names)
        if (f"u{n}" in alerted) == any(reference_excludes(with_modifier(*v), name) for v in kept)
    ]
    assert wrong == [], f"{engine}: {wrong[:10]} with values {kept}"


# ---------------------------------------------------------------------------------------------
# Fixed regressions, one per finding (issue 9)

WHITESPACE_VALUES = [
    ("", [("lit", c) for c in "ci-bot\tx"]),
    ("", [("lit", c) for c in "line\nfeed"]),
    ("", [("lit", c) for c in "carriage\rreturn"]),
    ("", [("lit", c) for c in "wide\u3000space"]),
    ("|contains", [("lit", c) for c in "g\th"]),
]
WHITESPACE_USERS = {
    "ci-bot\tx": False,
    "line\nfeed": False,
    "carriage\rreturn": False,
    "wide\u3000space": False,
    "zg\thz": False,
    "ci-bot": True,  # the pieces a query parser would split a value into
    "x": True,
    "line": True,
    "feed": True,
    "wide": True,
    "space": True,
    "g": True,
    "zgz": True,
}


@pytest.mark.parametrize("engine", ENGINES)
def test_tabs_line_breaks_and_unicode_spaces_exclude_only_the_listed_user(
    engine: str, tmp_path
) -> None:
    """Lucene split such a value into terms (the listed user alerted, its pieces were
    silenced); EQL and KQL could not parse the query at all."""
    query, rule, kept, refused = convert_refusing(engine, WHITESPACE_VALUES, tmp_path)
    assert refused == []
    names = list(WHITESPACE_USERS)
    alerted = ENGINES[engine][1](
        query, rule, [event(f"u{n}", name) for n, name in enumerate(names)], tmp_path
    )
    assert {name for n, name in enumerate(names) if f"u{n}" in alerted} == {
        name for name, alerts in WHITESPACE_USERS.items() if alerts
    }


def test_spark_wildcard_values_are_case_sensitive(tmp_path) -> None:
    """`rlike '(?isu)...'` ignored case: the upper-case look-alike was silenced."""
    value = [("lit", c) for c in "ci:deploy"] + [ANY] + [("lit", c) for c in "er"]
    query, rule, _, _ = convert_refusing("spark", [("", value)], tmp_path)
    users = ["ci:deployer", "ci:deploy-x-er", "CI:DEPLOYER", "ci:Deployer"]
    alerted = ENGINES["spark"][1](query, rule, [event(user, user) for user in users], tmp_path)
    assert alerted == {"CI:DEPLOYER", "ci:Deployer"}


def refusal(target: str, value: str, tmp_path) -> str:
    """The one error line converting a filter with this value gives for the target."""
    from k8s_audit_detect import UserError

    text = f"""title: One value
id: 4d5e6f70-8192-4a3b-9c4d-5e6f70819203
status: test
logsource:
  product: kubernetes
  service: audit
filter:
  rules:
    - kubernetes_serviceaccount_token_requested
  selection:
    user.username: {json.dumps(value)}
  condition: not selection
"""
    folder = filters_with(tmp_path, text)
    t = TARGETS_BY_NAME[target]
    collection = load_rules(RULES_DIR, folder, t.variants()[0], ROOT)
    with pytest.raises(UserError) as error:
        convert_target(t, collection)
    line = str(error.value)
    assert len(line.splitlines()) == 1 and ADVERSARIAL.name in line, line
    return line


@pytest.mark.parametrize(
    ("target", "value", "reason"),
    [
        # KQL: `matches regex` / `contains ... and contains ...`, unanchored
        ("sentinel-aksaudit", "system:serviceaccount:*:deployer", "unanchored"),
        ("sentinel-azurediagnostics", "ci-?ot", "? wildcard"),
        # Loki: \* became `\\.*`; a backtick switched to a case-insensitive "(?i)..." string
        ("loki", "deploy\\*bot", "literal * or ?"),
        ("loki", "q\\?x", "literal * or ?"),
        ("loki", "semi`tick", "backtick"),
        # SPL cannot escape a star (Splunk Search Manual), and has no ? wildcard
        ("splunk", "deploy\\*bot", "literal *"),
        ("splunk", "ci-?ot", "single-character wildcard"),
        # ES|QL: the backend's \* is no escape in an ES|QL string; Sumo documents none
        ("elastic-esql", "deploy\\*bot", "literal * or ?"),
        ("sumologic-cse", "deploy\\*bot", "literal * or ?"),
        # no engine verifies a line break on these
        ("logscale", "a\nb", "tab or line break"),
        ("cloudwatch-eks", "a\tb", "tab or line break"),
    ],
)
def test_a_value_a_target_cannot_carry_exactly_is_refused(
    target: str, value: str, reason: str, tmp_path
) -> None:
    line = refusal(target, value, tmp_path)
    assert f"target {target}: user.username value " in line and reason in line, line


@pytest.mark.parametrize(
    "engine", [e for e in ENGINES if "lucene" in ENGINES[e][0] or e == "opensearch-lucene"]
)
def test_lucene_refuses_an_exact_value_that_query_string_reads_as_a_range(
    engine: str, tmp_path
) -> None:
    """`user:\\>x` is the range "above x" in query_string (the escape does not help): excluding
    the user `>x` this way silenced every user name sorting after it."""
    values = [("", [("lit", c) for c in ">x"]), ("|startswith", [("lit", c) for c in ">y"])]
    query, rule, kept, refused = convert_refusing(engine, values, tmp_path)
    assert refused == [values[0]] and kept == [values[1]]
    names = {"u0": ">x", "u1": "zed", "u2": ">yes"}
    alerted = ENGINES[engine][1](query, rule, [event(k, v) for k, v in names.items()], tmp_path)
    assert alerted == {"u0", "u1"}
