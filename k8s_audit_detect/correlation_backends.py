"""Correlation support for the backends that lack it or get it wrong, the pySigma way: each is
a subclass of the pySigma backend whose class attributes are the correlation query templates
(`*_correlation_query`, `*_aggregation_expression`, `*_condition_expression`, the search and
normalization expressions), so a plain rule converts exactly as the stock backend converts it.

What pySigma's template attributes cannot say is added by one mixin, `CorrelationContext`:

- A field that a pipeline maps, for correlation rules, to an expression of the platform (a
  name with `(` or `[`: `"sourceIPs"[-1]`, `SourceIps[-1]`, `element_at(sourceIPs, -1)`) is
  written as it is in group-by, alias and value positions, not quoted as a name.
- The frames get these placeholders besides pySigma's: {table} (the pipeline's `table`
  state), {keys} (the group-by columns' names, joined with ", "), {keys_select} (each group-by
  expression AS its name), {value} (the condition's field, as an expression), {count} and
  {op} (the condition), {order} (the referenced rules' names in order, for ordered sequences)
  and {rules} (how many rules are referenced).

The frames compute one result row per correlated group: the group's key, when it started and
ended, the measured value and the events that made it (their audit IDs), which replay turns
into one alert per group.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from sigma.backends.databricks import DatabricksBackend
from sigma.backends.elasticsearch import EqlBackend, ESQLBackend
from sigma.backends.kusto import KustoBackend
from sigma.backends.splunk import SplunkBackend
from sigma.backends.sqlite import sqliteBackend
from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator,
    SigmaCorrelationFieldAliases,
    SigmaCorrelationRule,
    SigmaCorrelationTimespan,
    SigmaRuleReference,
)

from k8s_audit_detect.correlate import DUCKDB_EVENT_TIME

EXPRESSION = re.compile(r"[(\[]")


CONDITION_OPERATORS = {
    SigmaCorrelationConditionOperator.LT: "<",
    SigmaCorrelationConditionOperator.LTE: "<=",
    SigmaCorrelationConditionOperator.GT: ">",
    SigmaCorrelationConditionOperator.GTE: ">=",
    SigmaCorrelationConditionOperator.EQ: "==",
    SigmaCorrelationConditionOperator.NEQ: "!=",
}


class CorrelationContext:
    """Placeholders and field rendering for correlation templates (see the module docstring)."""

    # Written in place of {keys} / {keys_select} when a correlation has no group-by.
    no_group_key: ClassVar[str] = "'all'"
    no_group_name: ClassVar[str] = "sigma_group"

    def correlation_field(self, field: str) -> str:
        """A field in a correlation position: an expression as it is, a name quoted."""
        if EXPRESSION.search(field):
            return field
        return self.escape_and_quote_field(field)  # type: ignore[attr-defined]

    def correlation_key_name(self, field: str) -> str:
        """The name of a group-by column in the result: the field's name as an identifier."""
        name = re.sub(r"\W+", "_", re.sub(r"\[[^\]]*\]|\(|\)", " ", field)).strip("_")
        return name or self.no_group_name

    def convert_correlation_fieldref(self, fieldref: str | list[str] | None) -> str:
        if fieldref is None:
            return ""
        if isinstance(fieldref, list):
            return ", ".join(self.correlation_field(field) for field in fieldref)
        return self.correlation_field(fieldref)

    def convert_correlation_search_field_normalization_expression(
        self, aliases: SigmaCorrelationFieldAliases, rule_reference: SigmaRuleReference
    ) -> str:
        if len(aliases) == 0:
            return ""
        template = self.correlation_search_field_normalization_expression  # type: ignore[attr-defined]
        joiner = self.correlation_search_field_normalization_expression_joiner  # type: ignore[attr-defined]
        if template is None or joiner is None:
            raise NotImplementedError(
                "Correlation field normalization is not supported by backend."
            )
        return joiner.join(
            template.format(alias=alias.alias, field=self.correlation_field(field))
            for alias in aliases
            for reference, field in alias.mapping.items()
            if reference == rule_reference
        )

    def convert_correlation_aggregation_groupby_from_template(
        self, group_by: list[str] | None, method: str
    ) -> str:
        if not group_by:
            nofield = self.groupby_expression_nofield  # type: ignore[attr-defined]
            return "" if nofield is None else nofield[method]
        fields = self.groupby_field_expression_joiner[method].join(  # type: ignore[attr-defined]
            self.groupby_field_expression[method].format(  # type: ignore[attr-defined]
                field=self.correlation_field(field), name=self.correlation_key_name(field)
            )
            for field in group_by
        )
        return self.groupby_expression[method].format(fields=fields)  # type: ignore[attr-defined]

    def correlation_table(self) -> str:
        """Where the events are: the pipeline's `table` state (a table, a macro, or the
        source's first lines)."""
        state = self.last_processing_pipeline.state  # type: ignore[attr-defined]
        return str(state.get("table", ""))

    def mapped_field(self, field: str) -> str:
        """A Sigma field as the pipeline's field mappings name it (for the event id and time
        that frames carry into their results)."""
        from sigma.processing.transformations.base import FieldMappingTransformationBase

        for item in self.last_processing_pipeline.items:  # type: ignore[attr-defined]
            transformation = item.transformation
            if isinstance(transformation, FieldMappingTransformationBase) and (
                item.match_field_name(field)
            ):
                mapped = transformation.apply_field_name(field)
                if isinstance(mapped, str):
                    field = mapped
        return self.correlation_field(field)

    def correlation_context(self, rule: SigmaCorrelationRule) -> dict[str, Any]:
        keys = [(self.correlation_field(f), self.correlation_key_name(f)) for f in rule.group_by]
        if not keys:
            keys = [(self.no_group_key, self.no_group_name)]
        condition = rule.condition
        simple = isinstance(condition, SigmaCorrelationCondition)
        names = [str(ref.rule.name or ref.rule.id) for ref in rule.referenced_rules]
        return {
            "table": self.correlation_table(),
            "keys": ", ".join(name for _, name in keys),
            "keys_select": ", ".join(f"{expr} AS {name}" for expr, name in keys),
            "value": self.convert_correlation_fieldref(condition.fieldref) if simple else "",
            "op": self.correlation_condition_mapping[condition.op] if simple else "",  # type: ignore[attr-defined]
            "count": condition.count if simple else len(names),
            "order": names,
            "rules": len(names),
            "first_rule": names[0],
            "last_rule": names[-1],
            "event_id": self.mapped_field("auditID"),
        }

    def convert_correlation_search(self, rule: SigmaCorrelationRule, **kwargs: Any) -> str:
        """The referenced rules' queries through the single-rule expression (one rule, if the
        backend has that expression) or the multi-rule ones; all may use the context's
        placeholders ({table})."""
        context = self.correlation_context(rule)
        single = self.correlation_search_single_rule_expression  # type: ignore[attr-defined]
        references = rule.referenced_rules
        if single is not None and len(references) == 1:
            (query, *more) = references[0].rule.get_conversion_result()
            if not more:
                return single.format(
                    rule=references[0].rule,
                    query=query,
                    normalization=self.convert_correlation_search_field_normalization_expression(
                        rule.aliases, references[0]
                    ),
                    **context,
                )
        queries = [
            self.correlation_search_multi_rule_query_expression.format(  # type: ignore[attr-defined]
                rule=reference.rule,
                ruleid=reference.rule.name or reference.rule.id,
                query=self.convert_correlation_search_multi_rule_query_postprocess(query),  # type: ignore[attr-defined]
                normalization=self.convert_correlation_search_field_normalization_expression(
                    rule.aliases, reference
                ),
                **context,
            )
            for reference in rule.referenced_rules
            for query in reference.rule.get_conversion_result()
        ]
        joiner = self.correlation_search_multi_rule_query_expression_joiner  # type: ignore[attr-defined]
        return self.correlation_search_multi_rule_expression.format(  # type: ignore[attr-defined]
            queries=joiner.join(queries), **context
        )

    def convert_correlation_rule_from_template(
        self, rule: SigmaCorrelationRule, correlation_type: str, method: str
    ) -> list[str]:
        template = (
            getattr(self, f"{correlation_type}_correlation_query") or self.default_correlation_query  # type: ignore[attr-defined]
        )
        if template is None or method not in template:
            raise NotImplementedError(
                f"Correlation rule type '{correlation_type}' is not supported by backend."
            )
        search = self.convert_correlation_search(rule)
        context = self.correlation_context(rule)
        frame: str = template[method]
        return [
            frame.format(
                search=search,
                timespan=self.convert_timespan(rule.timespan, method),  # type: ignore[attr-defined]
                aggregate=self.convert_correlation_aggregation_from_template(  # type: ignore[attr-defined]
                    rule, correlation_type, method, search
                ),
                groupby=self.convert_correlation_aggregation_groupby_from_template(
                    rule.group_by, method
                ),
                typing=self.convert_correlation_typing(rule),  # type: ignore[attr-defined]
                condition=self.convert_correlation_condition_from_template(  # type: ignore[attr-defined]
                    rule.condition, rule.referenced_rules, correlation_type, method
                ),
                **{**context, **self.correlation_extra(rule, correlation_type, method)},
            )
        ]

    def correlation_extra(
        self, rule: SigmaCorrelationRule, correlation_type: str, method: str
    ) -> dict[str, Any]:
        """More placeholders a backend's frames use."""
        return {}


# ---------------------------------------------------------------------------------------------
# DuckDB: what `convert.py replay` runs (the sqlite backend's own correlation SQL uses SQLite's
# json_each, julianday and rowid and does not run on DuckDB). An event whose time does not
# parse is left out (a cast would fail the whole query; as Spark's to_timestamp does under
# ANSI mode, Spark 4's and Databricks SQL's default). The time is read with its zone and made
# UTC: a cast to TIMESTAMP drops a zone offset (`11:10+02:00` read as 11:10), one to
# TIMESTAMPTZ keeps it. An event without a group-by value (or, counting values, without the
# value) is in no group: left out (a NULL key would otherwise make a group of its own).

DUCKDB_EVENTS = f"""WITH matched AS (
{{search}}
),
events AS (
  SELECT {{keys_select}}, {{value_select}}sigma_rule,
    {DUCKDB_EVENT_TIME} AS sigma_time, "auditID" AS sigma_event
  FROM matched WHERE {DUCKDB_EVENT_TIME} IS NOT NULL{{present}}
),"""
# Once per group: the windows that met the condition, merged into one span; its events.
DUCKDB_ALERTS = """fired AS (
  SELECT {keys}, min(sigma_window_start) AS first_seen, max(sigma_time) AS last_seen,
    max(sigma_metric) AS {metric}
  FROM windows WHERE {condition}
  GROUP BY ALL
)
SELECT fired.*, (
  SELECT list(struct_pack(rule := e.sigma_rule, auditID := e.sigma_event,
      time := e.sigma_time{evidence_value}) ORDER BY e.sigma_time, e.sigma_event)
  FROM (
    SELECT {distinct}* FROM events AS e
    WHERE e.sigma_time BETWEEN fired.first_seen AND fired.last_seen AND {key_join}
    ORDER BY {distinct_order}e.sigma_time, e.sigma_event
  ) AS e
) AS events
FROM fired
ORDER BY first_seen, {keys}"""


class SqlCorrelationTemplates(CorrelationContext):
    """What the DuckDB and Spark SQL correlation backends share: each base rule's finalized
    query as a subquery tagged with its rule, group-by columns as they are named, and the
    metric compared as `sigma_metric`. Each backend adds its aggregations and queries."""

    default_correlation_method: ClassVar[str] = "default"
    correlation_condition_mapping: ClassVar[dict[Any, str]] = {
        **CONDITION_OPERATORS,
        SigmaCorrelationConditionOperator.EQ: "=",
    }
    correlation_search_single_rule_expression: ClassVar[str | None] = None
    correlation_search_multi_rule_expression: ClassVar[str] = "{queries}"
    # each rule's query finalized (the pipeline's postprocessing applied): SELECT ... FROM it
    finalize_correlation_subqueries: ClassVar[bool] = True
    correlation_search_multi_rule_query_expression: ClassVar[str] = (
        "  SELECT *, '{ruleid}' AS sigma_rule{normalization} FROM ({query})"
    )
    correlation_search_field_normalization_expression: ClassVar[str] = ", {field} AS {alias}"
    correlation_search_field_normalization_expression_joiner: ClassVar[str] = ""
    groupby_expression: ClassVar[dict[str, str]] = {"default": "{fields}"}
    groupby_field_expression: ClassVar[dict[str, str]] = {"default": "{name}"}
    groupby_field_expression_joiner: ClassVar[dict[str, str]] = {"default": ", "}
    groupby_expression_nofield: ClassVar[dict[str, str]] = {"default": "sigma_group"}
    event_count_aggregation_expression: ClassVar[dict[str, str]] = {"default": "count(*)"}
    temporal_ordered_aggregation_expression: ClassVar[dict[str, str]] = {"default": ""}
    event_count_condition_expression: ClassVar[dict[str, str]] = {
        "default": "sigma_metric {op} {count}"
    }
    value_count_condition_expression: ClassVar[dict[str, str]] = event_count_condition_expression
    temporal_condition_expression: ClassVar[dict[str, str]] = event_count_condition_expression
    temporal_ordered_condition_expression: ClassVar[dict[str, str]] = {"default": "sigma_metric"}

    def present(self, rule: SigmaCorrelationRule, value: str) -> str:
        """The condition that an event has every group-by value (and the counted `value`, an
        expression, if any), to add to the events' WHERE clause: an event without one is in
        no group."""
        fields = [self.correlation_field(f) for f in rule.group_by] + ([value] if value else [])
        return "".join(f" AND {field} IS NOT NULL" for field in fields)


class DuckDBCorrelationBackend(SqlCorrelationTemplates, sqliteBackend):
    """The sqlite backend's SQL for plain rules; correlations as DuckDB SQL with sliding
    windows over requestReceivedTimestamp, one row per correlated group."""

    name: ClassVar[str] = "DuckDB SQL (k8s_audit_detect)"
    identifier: ClassVar[str] = "k8s_duckdb"
    correlation_methods: ClassVar[dict[str, str]] = {
        "default": "Sliding windows per group (DuckDB window functions), one row per group"
    }
    correlation_search_multi_rule_query_expression_joiner: ClassVar[str] = "\n  UNION ALL BY NAME\n"
    value_count_aggregation_expression: ClassVar[dict[str, str]] = {
        "default": "count(DISTINCT sigma_value)"
    }
    temporal_aggregation_expression: ClassVar[dict[str, str]] = {
        "default": "count(DISTINCT sigma_rule)"
    }

    # A window per event: the group's events in the timespan before it.
    _window = (
        "OVER (PARTITION BY {groupby} ORDER BY sigma_time "
        "RANGE BETWEEN INTERVAL '{timespan}' PRECEDING AND CURRENT ROW)"
    )
    _windows = (
        "windows AS (\n  SELECT *, {aggregate} "
        + _window
        + " AS sigma_metric,\n    min(sigma_time) "
        + _window
        + " AS sigma_window_start\n  FROM events\n),\n"
    )
    event_count_correlation_query: ClassVar[dict[str, str]] = {
        "default": DUCKDB_EVENTS + "\n" + _windows + DUCKDB_ALERTS
    }
    value_count_correlation_query: ClassVar[dict[str, str]] = event_count_correlation_query
    temporal_correlation_query: ClassVar[dict[str, str]] = event_count_correlation_query
    # Ordered: a chain per rule. chain1 marks the first rule's events with their time; each
    # next rule's event carries the latest chain start among the previous rule's events
    # strictly before it in the timespan (a max over a window: no per-event lists); the last
    # rule's event whose chain started within the timespan met the condition. Its span, and
    # so the events listed, starts at the earliest of the first rule's events in the timespan
    # before it: every denial before a grant, not only the last.
    temporal_ordered_correlation_query: ClassVar[dict[str, str]] = {
        "default": DUCKDB_EVENTS
        + "\n{chain}"
        + "windows AS (\n  SELECT *, sigma_start{rules} IS NOT NULL"
        + " AND sigma_time - sigma_start{rules} <= INTERVAL '{timespan}' AS sigma_metric,\n"
        + "    min(sigma_start1) "
        + _window
        + " AS sigma_window_start\n  FROM chain{rules}\n),\n"
        + DUCKDB_ALERTS
    }
    _chain_step = (
        "chain{k} AS (\n  SELECT *, CASE WHEN sigma_rule = '{rule}' THEN "
        "max(sigma_start{previous}) OVER (PARTITION BY {groupby} ORDER BY sigma_time "
        "RANGE BETWEEN INTERVAL '{timespan}' PRECEDING AND INTERVAL '1 microsecond' PRECEDING) "
        "END AS sigma_start{k}\n  FROM chain{previous}\n),\n"
    )
    _chain_start = (
        "chain1 AS (\n  SELECT *, CASE WHEN sigma_rule = '{rule}' THEN sigma_time END "
        "AS sigma_start1\n  FROM events\n),\n"
    )

    def convert_timespan(
        self,
        timespan: SigmaCorrelationTimespan,
        output_format: str | None = None,
        method: str | None = None,
    ) -> str:
        return f"{timespan.seconds} seconds"

    def correlation_key_name(self, field: str) -> str:
        if EXPRESSION.search(field):
            return super().correlation_key_name(field)
        return '"' + field.replace('"', '""') + '"'

    def correlation_extra(
        self, rule: SigmaCorrelationRule, correlation_type: str, method: str
    ) -> dict[str, Any]:
        context = self.correlation_context(rule)
        counted = correlation_type == "value_count"
        keys = [name.strip() for name in context["keys"].split(", ")]
        return {
            "metric": correlation_type,
            "value_select": f"{context['value']} AS sigma_value, " if counted else "",
            "evidence_value": ", value := e.sigma_value" if counted else "",
            # value_count: the first event of each value; otherwise every event
            "distinct": "DISTINCT ON (e.sigma_value) " if counted else "",
            "distinct_order": "e.sigma_value, " if counted else "",
            "key_join": " AND ".join(f"e.{k} IS NOT DISTINCT FROM fired.{k}" for k in keys),
            "chain": self.ordered_chain(rule, method),
            "present": self.present(rule, context["value"] if counted else ""),
        }

    def ordered_chain(self, rule: SigmaCorrelationRule, method: str) -> str:
        """The chain CTEs of an ordered correlation, one per referenced rule."""
        names = [str(ref.rule.name or ref.rule.id) for ref in rule.referenced_rules]
        groupby = self.convert_correlation_aggregation_groupby_from_template(rule.group_by, method)
        timespan = self.convert_timespan(rule.timespan, method)
        chain = self._chain_start.format(rule=names[0])
        for k, name in enumerate(names[1:], start=2):
            chain += self._chain_step.format(
                k=k, rule=name, previous=k - 1, groupby=groupby, timespan=timespan
            )
        return chain


# ---------------------------------------------------------------------------------------------
# Elastic EQL: the stock backend's sequence template writes `[q2] by  with runs=2` (a syntax
# error; `runs` repeats the last subquery) for temporal_ordered, and `by field with runs=N`
# (N events with the SAME value) for value_count. Only the ordered sequence is EQL's to say.


class EqlCorrelationBackend(CorrelationContext, EqlBackend):
    """Elastic EQL with temporal_ordered as `sequence by <group> with maxspan=<span> [q1] [q2]`;
    no other correlation type (EQL cannot count or leave order out within a time span)."""

    name: ClassVar[str] = "Elastic EQL (k8s_audit_detect)"
    identifier: ClassVar[str] = "k8s_eql"
    default_correlation_query: ClassVar[dict[str, str] | None] = None
    event_count_correlation_query: ClassVar[dict[str, str] | None] = None
    value_count_correlation_query: ClassVar[dict[str, str] | None] = None
    temporal_correlation_query: ClassVar[dict[str, str] | None] = None
    temporal_ordered_correlation_query: ClassVar[dict[str, str]] = {
        "sequence": "sequence {groupby} with maxspan={timespan}\n  {search}"
    }
    correlation_search_single_rule_expression: ClassVar[str | None] = None
    correlation_search_multi_rule_query_expression: ClassVar[str] = "[any where {query}]"
    correlation_search_multi_rule_query_expression_joiner: ClassVar[str] = "\n  "
    temporal_ordered_aggregation_expression: ClassVar[dict[str, str]] = {"sequence": ""}
    temporal_ordered_condition_expression: ClassVar[dict[str, str]] = {"sequence": ""}
    groupby_field_expression: ClassVar[dict[str, str]] = {"sequence": "{field}"}
    groupby_field_expression_joiner: ClassVar[dict[str, str]] = {"sequence": ", "}


# ---------------------------------------------------------------------------------------------
# Elastic ES|QL: the stock backend has event_count, value_count and temporal (time buckets of
# the timespan) but no temporal_ordered. Ordered, for two rules: the first rule's earliest
# event in a bucket before the second rule's latest.

# One line, as the stock frames' line breaks would be escaped by the pipeline that escapes a
# value's (pipelines/elastic_esql_strings.yml); ES|QL reads either.
ESQL_ORDERED = (
    "{search} {typing} | eval timebucket=date_trunc({timespan}, @timestamp), "
    'sigma_first=case(event_type=="{first_rule}", @timestamp), '
    'sigma_last=case(event_type=="{last_rule}", @timestamp) '
    "| stats first_seen=min(@timestamp), last_seen=max(@timestamp), "
    "sigma_first=min(sigma_first), sigma_last=max(sigma_last){fields}{groupby} "
    "| where sigma_last > sigma_first"
)


class EsqlCorrelationBackend(CorrelationContext, ESQLBackend):
    """Elastic ES|QL with temporal_ordered added (two rules)."""

    name: ClassVar[str] = "Elastic ES|QL (k8s_audit_detect)"
    identifier: ClassVar[str] = "k8s_esql"
    default_correlation_query: ClassVar[dict[str, str]] = {
        "stats": "{search} {aggregate} {condition}"
    }
    temporal_correlation_query: ClassVar[dict[str, str]] = {
        "stats": "{search} {typing} {aggregate} {condition}"
    }
    temporal_ordered_correlation_query: ClassVar[dict[str, str]] = {"stats": ESQL_ORDERED}
    temporal_ordered_aggregation_expression: ClassVar[dict[str, str]] = {"stats": ""}
    temporal_ordered_condition_expression: ClassVar[dict[str, str]] = {"stats": ""}

    def correlation_extra(
        self, rule: SigmaCorrelationRule, correlation_type: str, method: str
    ) -> dict[str, Any]:
        if correlation_type == "temporal_ordered" and len(rule.referenced_rules) != 2:
            raise NotImplementedError("ordered sequences of two rules only")
        return {
            "fields": self.convert_correlation_aggregation_fields_from_template(
                rule.fields, rule.referenced_rules, rule.group_by, method
            )
        }


# ---------------------------------------------------------------------------------------------
# Splunk: the stock backend has event_count, value_count, temporal and aliases (`| rename`) but
# no temporal_ordered. Ordered, for two rules: the first rule's earliest event in a time bucket
# before the second rule's latest. The search starts from the pipeline's `table` state (the
# `kube_audit` macro), in each subsearch of a multisearch.

SPLUNK_ORDERED = """{search}
| eval sigma_time=_time
| bin _time span={timespan}
| stats min(eval(if(event_type="{first_rule}", sigma_time, null()))) as sigma_first \
max(eval(if(event_type="{last_rule}", sigma_time, null()))) as sigma_last \
min(sigma_time) as first_seen max(sigma_time) as last_seen values({event_id}) as events \
by _time{groupby}
| where sigma_last > sigma_first"""


class SplunkCorrelationBackend(CorrelationContext, SplunkBackend):
    """Splunk SPL with temporal_ordered added (two rules), the events' source from the
    pipeline in every subsearch, and fields a pipeline maps to eval expressions counted as
    such (`dc(eval(mvindex('sourceIPs{}', -1)))`)."""

    name: ClassVar[str] = "Splunk SPL (k8s_audit_detect)"
    identifier: ClassVar[str] = "k8s_splunk"
    correlation_search_single_rule_expression: ClassVar[str] = "{table} {query}{normalization}"
    correlation_search_multi_rule_expression: ClassVar[str] = "| multisearch\n{queries}"
    correlation_search_multi_rule_query_expression: ClassVar[str] = (
        '[ search {table} {query} | eval event_type="{ruleid}"{normalization} ]'
    )
    correlation_search_field_normalization_expression: ClassVar[str] = (
        " | rename {field} as {alias}"
    )
    temporal_ordered_correlation_query: ClassVar[dict[str, str]] = {"stats": SPLUNK_ORDERED}
    temporal_ordered_aggregation_expression: ClassVar[dict[str, str]] = {"stats": ""}
    temporal_ordered_condition_expression: ClassVar[dict[str, str]] = {"stats": ""}

    def correlation_field(self, field: str) -> str:
        if EXPRESSION.search(field) or re.fullmatch(r"[\w.{}]+", field):
            return field
        return '"' + field.replace('"', '\\"') + '"'

    def correlation_extra(
        self, rule: SigmaCorrelationRule, correlation_type: str, method: str
    ) -> dict[str, Any]:
        if correlation_type == "temporal_ordered" and len(rule.referenced_rules) != 2:
            raise NotImplementedError("ordered sequences of two rules only")
        return {}


# ---------------------------------------------------------------------------------------------
# Kusto (Microsoft Sentinel / Azure Monitor): no correlation support in the stock backend.
# Each rule's query (finalized: its table and the pipeline's fixes), typed with sigma_rule, in
# windows as long as the timespan that start every half timespan (hopping windows: each event
# is in two), so events up to half a timespan apart always share a window, wherever the
# windows' edges fall (tumbling bins of the whole timespan split a burst at every edge);
# one row per group: its earliest window that met the condition.

KUSTO_EVENTS = """{search}
| extend sigma_time = TimeGenerated, sigma_event = tostring({event_id}){keys_select}
| extend sigma_window = pack_array(bin(sigma_time, {half}), bin(sigma_time, {half}) - {half})
| mv-expand sigma_window to typeof(datetime)"""
KUSTO_ONE_ROW_PER_GROUP = """| summarize arg_min(first_seen, *) by {keys}
| project {keys}, first_seen, last_seen, {measured}, events"""


class KustoCorrelationBackend(CorrelationContext, KustoBackend):
    """KQL correlations: event_count, value_count (dcount), temporal and temporal_ordered
    (two rules) over time bins, with aliases."""

    name: ClassVar[str] = "Kusto KQL (k8s_audit_detect)"
    identifier: ClassVar[str] = "k8s_kusto"
    correlation_methods: ClassVar[dict[str, str]] = {
        "default": "Hopping windows of the timespan every half timespan, one row per group"
    }
    default_correlation_method: ClassVar[str] = "default"
    correlation_condition_mapping: ClassVar[dict[Any, str]] = CONDITION_OPERATORS
    correlation_search_single_rule_expression: ClassVar[str | None] = None
    correlation_search_multi_rule_expression: ClassVar[str] = "union\n{queries}"
    # each rule's query finalized (the pipeline's table and postprocessing applied)
    finalize_correlation_subqueries: ClassVar[bool] = True
    correlation_search_multi_rule_query_expression: ClassVar[str] = (
        '({query}\n| extend sigma_rule = "{ruleid}"{normalization})'
    )
    correlation_search_multi_rule_query_expression_joiner: ClassVar[str] = ",\n"
    correlation_search_field_normalization_expression: ClassVar[str] = (
        ", {alias} = tostring({field})"
    )
    correlation_search_field_normalization_expression_joiner: ClassVar[str] = ""
    groupby_expression: ClassVar[dict[str, str]] = {"default": ", {fields}"}
    groupby_field_expression: ClassVar[dict[str, str]] = {"default": "{name}"}
    groupby_field_expression_joiner: ClassVar[dict[str, str]] = {"default": ", "}
    groupby_expression_nofield: ClassVar[dict[str, str]] = {"default": ", sigma_group"}
    no_group_key: ClassVar[str] = '"all"'

    _summary = (
        "first_seen = min(sigma_time), last_seen = max(sigma_time), "
        "events = make_list(sigma_event) by sigma_window{groupby}"
    )
    event_count_aggregation_expression: ClassVar[dict[str, str]] = {
        "default": "| summarize event_count = count(), " + _summary
    }
    value_count_aggregation_expression: ClassVar[dict[str, str]] = {
        "default": "| extend sigma_value = tostring({field})\n"
        "| summarize value_count = dcount(sigma_value), " + _summary
    }
    temporal_aggregation_expression: ClassVar[dict[str, str]] = {
        "default": "| summarize temporal = dcount(sigma_rule), " + _summary
    }
    temporal_ordered_aggregation_expression: ClassVar[dict[str, str]] = {
        "default": '| extend sigma_first = iff(sigma_rule == "{referenced_rules}", '
        "sigma_time, datetime(null))\n| summarize sigma_first = min(sigma_first), "
        'sigma_last = max(iff(sigma_rule == "{last}", sigma_time, datetime(null))), ' + _summary
    }
    event_count_condition_expression: ClassVar[dict[str, str]] = {
        "default": "| where event_count {op} {count}"
    }
    value_count_condition_expression: ClassVar[dict[str, str]] = {
        "default": "| where value_count {op} {count}"
    }
    temporal_condition_expression: ClassVar[dict[str, str]] = {
        "default": "| where temporal {op} {count}"
    }
    temporal_ordered_condition_expression: ClassVar[dict[str, str]] = {
        "default": "| where sigma_last > sigma_first"
    }
    referenced_rules_expression: ClassVar[dict[str, str]] = {"default": "{ruleid}"}
    referenced_rules_expression_joiner: ClassVar[dict[str, str]] = {"default": ","}
    default_correlation_query: ClassVar[dict[str, str]] = {
        "default": KUSTO_EVENTS + "\n{aggregate}\n{condition}\n" + KUSTO_ONE_ROW_PER_GROUP
    }

    def correlation_field(self, field: str) -> str:
        return field  # KQL names: columns and dynamic paths as the pipeline maps them

    def convert_timespan(
        self,
        timespan: SigmaCorrelationTimespan,
        output_format: str | None = None,
        method: str | None = None,
    ) -> str:
        return f"{timespan.seconds}s"

    def correlation_extra(
        self, rule: SigmaCorrelationRule, correlation_type: str, method: str
    ) -> dict[str, Any]:
        measured = {"temporal_ordered": "sigma_first, sigma_last"}
        return {
            "half": f"{rule.timespan.seconds // 2}s",
            "measured": measured.get(correlation_type, correlation_type),
        }

    def correlation_context(self, rule: SigmaCorrelationRule) -> dict[str, Any]:
        context = super().correlation_context(rule)
        keys = [(f, self.correlation_key_name(f)) for f in rule.group_by] or [
            (self.no_group_key, self.no_group_name)
        ]
        aliases = {alias.alias for alias in rule.aliases}
        context["keys_select"] = "".join(
            f", {name} = tostring({expr})" for expr, name in keys if expr not in aliases
        )
        return context

    def convert_correlation_aggregation_from_template(
        self, rule: SigmaCorrelationRule, correlation_type: Any, method: str, search: str
    ) -> str:
        if correlation_type == "temporal_ordered":
            if len(rule.referenced_rules) != 2:
                raise NotImplementedError("ordered sequences of two rules only")
            first, last = (str(r.rule.name or r.rule.id) for r in rule.referenced_rules)
            template = self.temporal_ordered_aggregation_expression[method]
            return template.format(
                referenced_rules=first,
                last=last,
                timespan=self.convert_timespan(rule.timespan, method),
                groupby=self.convert_correlation_aggregation_groupby_from_template(
                    rule.group_by, method
                ),
            )
        return super().convert_correlation_aggregation_from_template(  # type: ignore[misc]
            rule, correlation_type, method, search
        )


# ---------------------------------------------------------------------------------------------
# Spark SQL (Databricks): no correlation support in the stock backend. As DuckDB's, sliding
# windows per group (Spark has no DISTINCT window aggregate: size(collect_set(...)) instead),
# and an event whose time does not parse left out: try_to_timestamp (Databricks SQL and Runtime
# 11.3 LTS and above, docs.databricks.com/sql/language-manual/functions/try_to_timestamp.html).

SPARK_EVENT_TIME = "try_to_timestamp(requestReceivedTimestamp)"
SPARK_EVENTS = f"""WITH matched AS (
{{search}}
),
events AS (
  SELECT {{keys_select}}, {{value_select}}sigma_rule,
    {SPARK_EVENT_TIME} AS sigma_time, auditID AS sigma_event
  FROM matched WHERE {SPARK_EVENT_TIME} IS NOT NULL{{present}}
),"""
SPARK_ALERTS = """fired AS (
  SELECT {keys}, min(sigma_window_start) AS first_seen, max(sigma_time) AS last_seen,
    max(sigma_metric) AS {metric}
  FROM windows WHERE {condition}
  GROUP BY {keys}
)
SELECT {fired_keys}, fired.first_seen, fired.last_seen, fired.{metric},
  array_sort(collect_list(e.sigma_event)) AS events
FROM fired JOIN events AS e
  ON e.sigma_time BETWEEN fired.first_seen AND fired.last_seen AND {key_join}
GROUP BY {fired_keys}, fired.first_seen, fired.last_seen, fired.{metric}"""


class SparkCorrelationBackend(SqlCorrelationTemplates, DatabricksBackend):
    """Spark SQL correlations over the pipeline's table: event_count, value_count, temporal and
    temporal_ordered with sliding windows, aliases."""

    name: ClassVar[str] = "Spark SQL (k8s_audit_detect)"
    identifier: ClassVar[str] = "k8s_spark"
    correlation_methods: ClassVar[dict[str, str]] = {
        "default": "Sliding windows per group (Spark window functions), one row per group"
    }
    correlation_search_multi_rule_query_expression_joiner: ClassVar[str] = "\n  UNION ALL\n"
    value_count_aggregation_expression: ClassVar[dict[str, str]] = {
        "default": "size(collect_set(sigma_value)"
    }
    temporal_aggregation_expression: ClassVar[dict[str, str]] = {
        "default": "size(collect_set(sigma_rule)"
    }

    _window = (
        "OVER (PARTITION BY {groupby} ORDER BY CAST(sigma_time AS DOUBLE) "
        "RANGE BETWEEN {timespan} PRECEDING AND CURRENT ROW)"
    )
    _close = {"event_count": "", "value_count": ")", "temporal": ")"}
    _windows = (
        "windows AS (\n  SELECT *, {aggregate} "
        + _window
        + "{close} AS sigma_metric,\n    min(sigma_time) "
        + _window
        + " AS sigma_window_start\n  FROM events\n),\n"
    )
    event_count_correlation_query: ClassVar[dict[str, str]] = {
        "default": SPARK_EVENTS + "\n" + _windows + SPARK_ALERTS
    }
    value_count_correlation_query: ClassVar[dict[str, str]] = event_count_correlation_query
    temporal_correlation_query: ClassVar[dict[str, str]] = event_count_correlation_query
    # Ordered: a chain per rule, as DuckDB's (DuckDBCorrelationBackend).
    temporal_ordered_correlation_query: ClassVar[dict[str, str]] = {
        "default": SPARK_EVENTS
        + "\n{chain}"
        + "windows AS (\n  SELECT *, sigma_start{rules} IS NOT NULL AND CAST(sigma_time AS "
        + "DOUBLE) - CAST(sigma_start{rules} AS DOUBLE) <= {timespan} AS sigma_metric,\n"
        + "    min(sigma_start1) "
        + _window
        + " AS sigma_window_start\n  FROM chain{rules}\n),\n"
        + SPARK_ALERTS
    }
    _chain_step = (
        "chain{k} AS (\n  SELECT *, CASE WHEN sigma_rule = '{rule}' THEN "
        "max(sigma_start{previous}) OVER (PARTITION BY {groupby} "
        "ORDER BY CAST(sigma_time AS DOUBLE) RANGE BETWEEN {timespan} PRECEDING "
        "AND 0.000001 PRECEDING) "
        "END AS sigma_start{k}\n  FROM chain{previous}\n),\n"
    )
    _chain_start = DuckDBCorrelationBackend._chain_start

    def convert_timespan(
        self,
        timespan: SigmaCorrelationTimespan,
        output_format: str | None = None,
        method: str | None = None,
    ) -> str:
        return str(timespan.seconds)

    def correlation_field(self, field: str) -> str:
        if EXPRESSION.search(field):
            return field
        return field if re.fullmatch(r"[\w.]+", field) else f"`{field}`"

    def correlation_extra(
        self, rule: SigmaCorrelationRule, correlation_type: str, method: str
    ) -> dict[str, Any]:
        context = self.correlation_context(rule)
        counted = correlation_type == "value_count"
        keys = [name.strip() for name in context["keys"].split(", ")]
        return {
            "metric": correlation_type,
            "close": self._close.get(correlation_type, ""),
            "value_select": f"{context['value']} AS sigma_value, " if counted else "",
            "key_join": " AND ".join(f"e.{k} <=> fired.{k}" for k in keys),
            "fired_keys": ", ".join(f"fired.{k}" for k in keys),
            "chain": DuckDBCorrelationBackend.ordered_chain(self, rule, method),  # type: ignore[arg-type]
            "present": self.present(rule, context["value"] if counted else ""),
        }


CORRELATION_BACKENDS: tuple[type, ...] = (
    DuckDBCorrelationBackend,
    EqlCorrelationBackend,
    EsqlCorrelationBackend,
    SplunkCorrelationBackend,
    KustoCorrelationBackend,
    SparkCorrelationBackend,
)
