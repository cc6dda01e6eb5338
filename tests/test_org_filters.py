"""An organisation's filter values are user input. tests/data/adversarial_org_filter.yml
excludes eleven user names full of characters that mean something in some query language;
on every engine exactly those users are quiet, their look-alikes alert, and no value breaks
out of the query it is embedded in (which would silence, or break, everything)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from engines import ENGINES

from convert import ROOT, RULES_DIR, TARGETS_BY_NAME, convert_target
from dac.rules import load_rules, sigma_rules

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
NO_LITERAL_WILDCARDS = {"eql", "gke-eql"}
LITERAL_WILDCARD_USERS = {"nomatch_literal_star", "nomatch_literal_question_mark"}


def filters_with(tmp: Path, filter_text: str) -> Path:
    """sigma/filters/ with this filter as the organisation's own."""
    folder = tmp / "filters"
    shutil.copytree(ROOT / "sigma" / "filters", folder)
    (folder / "org" / ADVERSARIAL.name).write_text(filter_text, encoding="utf-8")
    return folder


def without_literal_wildcards(text: str) -> str:
    return text.replace("      - 'deploy\\*bot'\n", "").replace("      - 'q\\?x'\n", "")


@pytest.fixture(scope="module")
def hits(tmp_path_factory):
    found: dict[str, set[str]] = {}

    def run(engine: str) -> set[str]:
        if engine not in found:
            target_name, runner = ENGINES[engine]
            target = TARGETS_BY_NAME[target_name]
            text = ADVERSARIAL.read_text(encoding="utf-8")
            if engine in NO_LITERAL_WILDCARDS:
                text = without_literal_wildcards(text)
            folder = filters_with(tmp_path_factory.mktemp(engine), text)
            collection = load_rules(RULES_DIR, folder, target.variants()[0], ROOT)
            (rule,) = sigma_rules(collection)
            (query,) = convert_target(target, collection).values()
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
    from dac import UserError

    folder = filters_with(tmp_path, ADVERSARIAL.read_text(encoding="utf-8"))
    t = TARGETS_BY_NAME[target]
    collection = load_rules(RULES_DIR, folder, t.variants()[0], ROOT)
    with pytest.raises(UserError, match=r"literal \* or \? exactly"):
        convert_target(t, collection)


def test_splunk_quotes_every_hostile_value(tmp_path) -> None:
    """No engine runs SPL: the exclusion is pinned, reviewed. Every value stays inside its
    double quotes (\\" and \\\\ escaped); the literal star is written \\*, which SPL reads as
    a literal only if its search escapes wildcards that way (unverified); `q?x` needs no escape
    (? is no wildcard in SPL). SPL's IN ignores case."""
    folder = filters_with(tmp_path, ADVERSARIAL.read_text(encoding="utf-8"))
    collection = load_rules(RULES_DIR, folder, (), ROOT)
    (query,) = convert_target(TARGETS_BY_NAME["splunk"], collection).values()
    assert (
        'NOT (user.username IN ("deploy\\*bot", "q?x", "say \\"hi\\" there", "it\'s", '
        '"back\\\\slash", "trail\\\\", "x\\") or true or (\\"", "x\' OR \'1\'=\'1", "a/b/c", '
        '"col:on user", "semi;colon|pipe`tick")) | table'
    ) in query
