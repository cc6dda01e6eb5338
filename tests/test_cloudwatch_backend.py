"""k8s_audit_detect/cloudwatch.py, the Logs Insights backend written here. No engine runs Logs
Insights outside AWS, so each Sigma construct is pinned to the expression it must give, reviewed
against the Logs Insights query syntax: `=~ /regex/`, `ispresent()`, `and`/`or`/`not`."""

from __future__ import annotations

import re

import pytest
from sigma.collection import SigmaCollection

from k8s_audit_detect.cloudwatch import CloudWatchLogsInsightsBackend

CASES = {
    "plain_string_is_anchored_case_insensitive": ("verb: create", "verb =~ /(?i)^create$/"),
    "cased_string_is_case_sensitive": (
        "user.username|cased: System:Node:x",
        "user.username =~ /^System:Node:x$/",
    ),
    "startswith": (
        "user.username|startswith: 'system:node:'",
        "user.username =~ /(?i)^system:node:/",
    ),
    "endswith": ("userAgent|endswith: '/v1'", "userAgent =~ /(?i)\\/v1$/"),
    "contains": ("requestURI|contains: token", "requestURI =~ /(?i)^.*token/"),
    "wildcards_become_regex": (
        "user.username: 'deploy*bot?'",
        "user.username =~ /(?i)^deploy.*bot.$/",
    ),
    "escaped_wildcard_is_literal": (
        "user.username: 'deploy\\*bot'",
        "user.username =~ /(?i)^deploy\\*bot$/",
    ),
    "regex_metacharacters_are_literal": (
        "user.username: 'a.b(c)[d]{e}|f+g^h$'",
        "user.username =~ /(?i)^a\\.b\\(c\\)\\[d\\]\\{e\\}\\|f\\+g\\^h\\$$/",
    ),
    "slash_cannot_end_the_regex": ("requestURI: '/api/v1'", "requestURI =~ /(?i)^\\/api\\/v1$/"),
    "quotes_and_backslash": ("user.username: 'a\"b\\\\c'", 'user.username =~ /(?i)^a"b\\\\c$/'),
    "regex_modifier_keeps_its_pattern": (
        "requestURI|re: '^/api/.*'",
        "requestURI =~ /^\\/api\\/.*/",
    ),
    "null_is_not_present": ("stage: null", "not ispresent(stage)"),
    "number_compares_as_number": ("responseStatus.code: 403", "responseStatus.code = 403"),
    "name_with_slash_is_backticked": (
        "annotations.authorization.k8s.io/decision: forbid",
        "`annotations.authorization.k8s.io/decision` =~ /(?i)^forbid$/",
    ),
}


def convert(selection: str) -> str:
    rule = f"""
title: case
logsource: {{product: kubernetes, service: audit}}
detection:
  selection:
    {selection}
  condition: selection
"""
    (query,) = CloudWatchLogsInsightsBackend().convert(SigmaCollection.from_yaml(rule))
    return query


@pytest.mark.parametrize("name", CASES)
def test_construct(name: str) -> None:
    selection, expected = CASES[name]
    assert convert(selection) == expected


@pytest.mark.parametrize("name", CASES)
def test_every_regex_is_well_formed(name: str) -> None:
    """Each /.../ compiles once its escaped slashes are read back (Python's re as a proxy)."""
    for pattern in re.findall(r"=~ /((?:\\.|[^/\\])*)/", convert(CASES[name][0])):
        re.compile(pattern.replace("\\/", "/"))


def test_not_and_or_precedence() -> None:
    rule = """
title: case
logsource: {product: kubernetes, service: audit}
detection:
  a: {verb: create}
  b: {stage: [ResponseComplete, Panic]}
  c: {user.username: x}
  condition: a and b and not c
"""
    (query,) = CloudWatchLogsInsightsBackend().convert(SigmaCollection.from_yaml(rule))
    assert query == (
        "verb =~ /(?i)^create$/ and (stage =~ /(?i)^ResponseComplete$/ or "
        "stage =~ /(?i)^Panic$/) and not user.username =~ /(?i)^x$/"
    )
