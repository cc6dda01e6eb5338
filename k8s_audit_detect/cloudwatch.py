"""A pySigma backend for AWS CloudWatch Logs Insights queries (no maintained one exists).

Declarative, on pySigma's TextQueryBackend: each class attribute is one piece of Logs
Insights syntax. Every string comparison is an anchored regular expression (`=~ /^...$/`)
built from the escaped value, case-insensitive unless the rule says `|cased`; a missing field
is `not ispresent(field)`. The query is the filter expression: the pipeline wraps it in
`fields ... | filter ... | sort`.

Correlation rules (event_count, value_count) as Logs Insights' `stats` in time bins of the
timespan (`bin()`, tumbling), then a `filter` on the aggregate; the pipeline puts the log
stream selection in front. Logs Insights' stats cannot tell which rule an event matched, nor
order events: temporal, temporal_ordered and aliases are not expressible (targets.py).
"""

from __future__ import annotations

import re
from typing import ClassVar

from sigma.conditions import ConditionAND, ConditionItem, ConditionNOT, ConditionOR
from sigma.conversion.base import TextQueryBackend
from sigma.correlations import SigmaCorrelationConditionOperator
from sigma.types import SigmaCompareExpression


class CloudWatchLogsInsightsBackend(TextQueryBackend):
    """AWS CloudWatch Logs Insights filter expressions."""

    name: ClassVar[str] = "AWS CloudWatch Logs Insights"
    identifier: ClassVar[str] = "cloudwatch_insights"
    formats: ClassVar[dict[str, str]] = {"default": "Logs Insights query"}
    requires_pipeline: ClassVar[bool] = False

    precedence: ClassVar[tuple[type[ConditionItem], type[ConditionItem], type[ConditionItem]]] = (
        ConditionNOT,
        ConditionAND,
        ConditionOR,
    )
    group_expression: ClassVar[str] = "({expr})"
    token_separator: str = " "
    or_token: ClassVar[str] = "or"
    and_token: ClassVar[str] = "and"
    not_token: ClassVar[str] = "not"
    eq_token: ClassVar[str] = " = "

    # Field names: dotted JSON paths as Logs Insights discovers them; anything else in backticks.
    field_quote: ClassVar[str] = "`"
    field_quote_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^[A-Za-z_@][\w.@]*$")
    field_quote_pattern_negation: ClassVar[bool] = True
    field_escape: ClassVar[str] = "`"
    field_escape_quote: ClassVar[bool] = True

    # String literals (only in unbound keyword searches): double quotes, backslash escapes.
    str_quote: ClassVar[str] = '"'
    escape_char: ClassVar[str] = "\\"
    wildcard_multi: ClassVar[str] = "*"
    wildcard_single: ClassVar[str] = "?"
    add_escaped: ClassVar[str] = "\\"
    filter_chars: ClassVar[str] = ""
    bool_values: ClassVar[dict[bool, str]] = {True: "true", False: "false"}

    # Every string comparison is an anchored regular expression built from the escaped value,
    # so no character of a value can act as a wildcard or end the pattern early. Sigma's plain
    # strings are case-insensitive ((?i)); `|cased` values are not.
    eq_expression: ClassVar[str] = "{field} =~ /(?i)^{regex}$/"
    startswith_expression: ClassVar[str] = "{field} =~ /(?i)^{regex}/"
    startswith_expression_allow_special: ClassVar[bool] = True
    endswith_expression: ClassVar[str] = "{field} =~ /(?i){regex}$/"
    endswith_expression_allow_special: ClassVar[bool] = True
    contains_expression: ClassVar[str] = "{field} =~ /(?i){regex}/"
    contains_expression_allow_special: ClassVar[bool] = True
    wildcard_match_expression: ClassVar[str] = "{field} =~ /(?i)^{regex}$/"
    re_expression: ClassVar[str] = "{field} =~ /{regex}/"
    re_escape_char: ClassVar[str] = "\\"
    re_escape: ClassVar[tuple[str, ...]] = ("/",)
    re_escape_escape_char: ClassVar[bool] = False
    re_flag_prefix: ClassVar[bool] = True

    case_sensitive_match_expression: ClassVar[str] = "{field} =~ /^{regex}$/"
    case_sensitive_startswith_expression: ClassVar[str] = "{field} =~ /^{regex}/"
    case_sensitive_startswith_expression_allow_special: ClassVar[bool] = True
    case_sensitive_endswith_expression: ClassVar[str] = "{field} =~ /{regex}$/"
    case_sensitive_endswith_expression_allow_special: ClassVar[bool] = True
    case_sensitive_contains_expression: ClassVar[str] = "{field} =~ /{regex}/"
    case_sensitive_contains_expression_allow_special: ClassVar[bool] = True

    cidr_expression: ClassVar[str] = 'isIpv4InSubnet({field}, "{value}")'
    compare_op_expression: ClassVar[str] = "{field} {operator} {value}"
    compare_operators: ClassVar[dict[SigmaCompareExpression.CompareOperators, str]] = {
        SigmaCompareExpression.CompareOperators.LT: "<",
        SigmaCompareExpression.CompareOperators.LTE: "<=",
        SigmaCompareExpression.CompareOperators.GT: ">",
        SigmaCompareExpression.CompareOperators.GTE: ">=",
    }

    field_null_expression: ClassVar[str] = "not ispresent({field})"
    field_exists_expression: ClassVar[str] = "ispresent({field})"
    field_not_exists_expression: ClassVar[str] = "not ispresent({field})"

    # Value lists stay ORs of regular expressions (an `in [...]` list compares exactly).
    convert_or_as_in: ClassVar[bool] = False
    convert_and_as_in: ClassVar[bool] = False

    unbound_value_str_expression: ClassVar[str] = "@message like {value}"
    unbound_value_num_expression: ClassVar[str] = '@message like "{value}"'
    unbound_value_re_expression: ClassVar[str] = "@message =~ /{value}/"

    # Correlations: `stats` by bin(<timespan>) and the group-by fields, then `filter`.
    correlation_methods: ClassVar[dict[str, str]] = {
        "default": "stats in time bins of the timespan (bin()), then a filter on the aggregate"
    }
    default_correlation_method: ClassVar[str] = "default"
    default_correlation_query: ClassVar[dict[str, str]] = {
        "default": "{search}\n{aggregate}\n{condition}"
    }
    correlation_search_single_rule_expression: ClassVar[str] = "filter {query}"
    correlation_search_multi_rule_expression: ClassVar[str] = "filter {queries}"
    correlation_search_multi_rule_query_expression: ClassVar[str] = "({query})"
    correlation_search_multi_rule_query_expression_joiner: ClassVar[str] = " or "
    _span = (
        "min(@timestamp) as first_seen, max(@timestamp) as last_seen by bin({timespan}){groupby}"
    )
    event_count_aggregation_expression: ClassVar[dict[str, str]] = {
        "default": "| stats count(*) as event_count, " + _span
    }
    value_count_aggregation_expression: ClassVar[dict[str, str]] = {
        "default": "| stats count_distinct({field}) as value_count, " + _span
    }
    event_count_condition_expression: ClassVar[dict[str, str]] = {
        "default": "| filter event_count {op} {count}"
    }
    value_count_condition_expression: ClassVar[dict[str, str]] = {
        "default": "| filter value_count {op} {count}"
    }
    groupby_expression: ClassVar[dict[str, str]] = {"default": ", {fields}"}
    groupby_field_expression: ClassVar[dict[str, str]] = {"default": "{field}"}
    groupby_field_expression_joiner: ClassVar[dict[str, str]] = {"default": ", "}
    groupby_expression_nofield: ClassVar[dict[str, str]] = {"default": ""}
    correlation_condition_mapping: ClassVar[dict[SigmaCorrelationConditionOperator, str]] = {
        SigmaCorrelationConditionOperator.LT: "<",
        SigmaCorrelationConditionOperator.LTE: "<=",
        SigmaCorrelationConditionOperator.GT: ">",
        SigmaCorrelationConditionOperator.GTE: ">=",
        SigmaCorrelationConditionOperator.EQ: "=",
        SigmaCorrelationConditionOperator.NEQ: "!=",
    }
