"""Engines that execute an emitted query over labelled events: each returns the auditIDs
(case ids) of the events its query matched."""

from __future__ import annotations

import atexit
import datetime
import functools
import glob
import io
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shapes import (
    AKS_AUDIT_DYNAMICS,
    AKS_AUDIT_STRINGS,
    aks_audit_row,
    aks_diagnostic_record,
    aks_diagnostic_records,
    elastic_aws_eks_audit,
    elastic_aws_eks_types,
    elastic_azure_platformlogs,
    elastic_gcp_audit,
    elastic_gcp_types,
    elastic_kubernetes,
    elastic_kubernetes_types,
    gke_cloud_audit_log,
    opensearch_dynamic,
)

Runner = Callable[[str, Any, Sequence[dict[str, Any]], Path], set[str]]
Shape = Callable[[dict[str, Any]], "dict[str, Any] | None"]
# A platform's mapping: the type of a document path ("keyword", "text", "long", or "none"
# for a path kept in _source but not indexed).
FieldTypes = Callable[[str], str]


def all_keyword(path: str) -> str:
    return "keyword"


def shaped(events: Sequence[dict[str, Any]], shape: Shape) -> list[tuple[str, dict[str, Any]]]:
    """(case id, document) for each event the platform records (a shape may drop one)."""
    docs = [(event["auditID"], shape(event)) for event in events]
    return [(case, doc) for case, doc in docs if doc is not None]


def eql_runner(shape: Shape) -> Runner:
    """Elastic's own EQL engine, with Elasticsearch's syntax, over documents in this shape.

    The engine compares every string case-insensitively by default (the original EQL), while
    Elasticsearch's `==` and `like` are case-sensitive: it runs case-sensitive here, which
    models Elasticsearch exactly for queries without `:` or `~` operators, and
    test_eql_queries_use_only_case_sensitive_operators holds the queries to that."""

    def run(query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path) -> set[str]:
        import eql
        import eql.functions
        import eql.utils
        from eql.parser import elasticsearch_syntax, ignore_missing_functions

        eql.utils.CASE_INSENSITIVE = False
        # The engine's wildcard regex ends in `$`, which Python lets match before a final line
        # break; Elasticsearch's wildcard matches the whole value: end it in \Z, and let * span
        # line breaks as Elasticsearch's does.
        saved_to_regex = eql.functions.Wildcard.to_regex
        eql.functions.Wildcard.to_regex = classmethod(_whole_value_wildcards)
        # Elasticsearch's `regex` is Lucene's regexp, matched against the whole value (. any
        # character); the engine's re.match only anchors the start.
        saved_match = eql.functions.Match.get_callback
        eql.functions.Match.get_callback = classmethod(_whole_value_regex_callback)

        with elasticsearch_syntax, ignore_missing_functions:
            parsed = eql.parse_query(query)
        hits: list[Any] = []
        engine = eql.PythonEngine()
        engine.add_output_hook(hits.append)
        engine.add_query(parsed)
        docs = [doc | {"_case_id": case} for case, doc in shaped(events, shape)]
        try:
            engine.stream_events([eql.Event("any", n, doc) for n, doc in enumerate(docs)])
        finally:
            eql.utils.CASE_INSENSITIVE = True
            eql.functions.Wildcard.to_regex = saved_to_regex
            eql.functions.Match.get_callback = saved_match
        return {e.data["_case_id"] for hit in hits for e in hit.events}

    return run


def _whole_value_regex_callback(cls: type, source_ast: Any, *regex_literals: Any) -> Any:
    """EQL's regex as Elasticsearch runs it: the whole value must match, . spans lines."""
    import re

    compiled = re.compile("|".join(f"(?:{r.value})" for r in regex_literals), re.DOTALL)

    def callback(source: Any, *_: Any) -> bool | None:
        return compiled.fullmatch(source) is not None if isinstance(source, str) else None

    return callback


def _whole_value_wildcards(cls: type, *wildcards: str) -> str:
    """EQL wildcards (* only, case-sensitive) as one regex that must match a whole value."""
    import re

    return "|".join(
        "(?s:^" + ".*".join(re.escape(part) for part in w.split("*")) + r"\Z)" for w in wildcards
    )


def run_duckdb(query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path) -> set[str]:
    """`convert.py replay`'s engine: the SQL over a JSON-lines audit log, on DuckDB."""
    from k8s_audit_detect.replay import plain_rule, run_replay

    log = tmp / "audit.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    run_replay([log], [plain_rule(rule, query)], out, err)
    # JSON lines end in \n only (a name may hold U+2028, which splitlines() would split at)
    return {json.loads(line)["auditID"] for line in out.getvalue().split("\n") if line}


def gke_elastic(event: dict[str, Any]) -> dict[str, Any] | None:
    """GKE's Cloud Audit Log record of the event, as Elastic's GCP integration indexes it."""
    record = gke_cloud_audit_log(event)
    return None if record is None else elastic_gcp_audit(record)


def aks_elastic(event: dict[str, Any]) -> dict[str, Any]:
    """AKS's diagnostic record of the event, as Elastic's Azure integration indexes it."""
    return elastic_azure_platformlogs(aks_diagnostic_record(event))


LUCENE_JARS = ("core", "queryparser", "memory", "analyzers-common", "misc")
LUCENE_MAIN = Path(__file__).resolve().parent / "lucene" / "LuceneMatch.java"


def keyword_fields(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """A document as Elasticsearch indexes it into keyword fields: one (path, value) per leaf
    value (each element of an array), plus `_exists_` for every path that has a value."""
    pairs: list[tuple[str, str]] = []
    for key, value in doc.items():
        path = f"{prefix}{key}"
        values = value if isinstance(value, list) else [value]
        before = len(pairs)
        for item in values:
            if isinstance(item, dict):
                pairs += keyword_fields(item, path + ".")
            elif item is not None:
                text = item if isinstance(item, str) else json.dumps(item)
                pairs.append((path, text))
        if len(pairs) > before:
            pairs.append(("_exists_", path))
    return pairs


def require(executable: str, package: str) -> str:
    """The path of an engine's executable; a missing one fails the test with what to install
    (scripts/test installs it)."""
    path = shutil.which(executable)
    assert path, f"{executable} is missing: apt-get install {package} (or run scripts/test)"
    return path


def lucene_classpath() -> str:
    require("java", "default-jdk-headless")
    jars = []
    for name in LUCENE_JARS:
        found = sorted(glob.glob(f"/usr/share/java/lucene-{name}-[0-9]*.jar"))
        assert found, f"Apache Lucene's {name} jar is missing: apt-get install liblucene8-java"
        jars.append(found[-1])
    return ":".join(jars)


def lucene_runner(shape: Shape, mapping: FieldTypes = all_keyword) -> Runner:
    """A runner for Lucene query strings over documents in the given platform shape, each
    field indexed with the type the platform's mapping gives it."""

    def run(query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path) -> set[str]:
        return run_lucene(query, shaped(events, shape), tmp, mapping)

    return run


def run_lucene(
    query: str,
    docs: Sequence[tuple[str, dict[str, Any]]],
    tmp: Path,
    mapping: FieldTypes = all_keyword,
) -> set[str]:
    """Apache Lucene's classic QueryParser and MemoryIndex, as Elasticsearch's and OpenSearch's
    query_string runs a Lucene query over fields of these types (tests/lucene/LuceneMatch.java):
    keyword, text (standard analyzer), long; a field the mapping does not index is left out,
    as Elasticsearch keeps it in _source only."""

    def escape(text: str) -> str:
        return (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )

    lines, types = [], {}
    for doc_id, doc in docs:
        pairs = []
        for path, value in keyword_fields(doc):
            kind = mapping(value if path == "_exists_" else path)
            if kind == "none":
                continue
            if kind != "keyword" and path != "_exists_":
                types[path] = kind
            pairs.append((path, value))
        cells = [doc_id, *(cell for pair in pairs for cell in pair)]
        lines.append("\t".join(escape(cell) for cell in cells))
    query_file = tmp / "query.lucene"
    query_file.write_text(query, encoding="utf-8")
    types_file = tmp / "types.tsv"
    types_file.write_text(
        "".join(f"{escape(path)}\t{kind}\n" for path, kind in sorted(types.items())),
        encoding="utf-8",
    )
    result = subprocess.run(
        ["java", "-cp", lucene_classpath(), str(LUCENE_MAIN), str(query_file), str(types_file)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.splitlines())


def run_kql(query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path) -> set[str]:
    """duckdb-kql: the KQL translated to DuckDB SQL and run over AKSAudit-shaped rows (the
    table name is the query's first line, AKSAudit or AKSAuditAdmin)."""
    names = [*AKS_AUDIT_STRINGS, *AKS_AUDIT_DYNAMICS]
    types = ["VARCHAR"] * len(AKS_AUDIT_STRINGS) + ["JSON"] * len(AKS_AUDIT_DYNAMICS)
    table = query.splitlines()[0].strip()
    # AKSAuditAdmin holds no get and list events (azure-monitor-ref/tables/aksauditadmin.md)
    kept = [e for e in events if table != "AKSAuditAdmin" or e.get("verb") not in ("get", "list")]
    rows = [
        [row[n] if n in AKS_AUDIT_STRINGS else _json_or_null(row[n]) for n in names]
        for row in (aks_audit_row(event) for event in kept)
    ]
    return _kql_hits(query, "tostring(AuditId)", table, list(zip(names, types, strict=True)), rows)


def run_kql_azurediagnostics(
    query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path
) -> set[str]:
    """duckdb-kql over AzureDiagnostics rows: Category and the Event's JSON in log_s, as
    AKS's diagnostic records land there in the legacy (Azure diagnostics) mode, from a
    cluster that sends both audit categories."""
    return set(azurediagnostics_results(query, events))


def azurediagnostics_results(query: str, events: Sequence[dict[str, Any]]) -> list[str]:
    """The auditID of every row the query returns, duplicates kept."""
    rows = [
        [record["category"], record["properties"]["log"], utc(record["time"])]
        for event in events
        for record in aks_diagnostic_records(event)
    ]
    columns = [("Category", "VARCHAR"), ("log_s", "VARCHAR"), ("TimeGenerated", "TIMESTAMP")]
    return _kql_rows(query, "tostring(event.auditID)", "AzureDiagnostics", columns, rows)


def utc(timestamp: Any) -> Any:
    """A time as Azure stores TimeGenerated, a UTC datetime (DuckDB's cast of a string to
    TIMESTAMP would drop a zone offset); a string that is not a time is left as it is."""
    try:
        parsed = datetime.datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        return timestamp
    if parsed.tzinfo is None:
        return parsed
    return parsed.astimezone(datetime.UTC).replace(tzinfo=None)


def _kql_hits(
    query: str, case_id: str, table: str, columns: list[tuple[str, str]], rows: list[list[Any]]
) -> set[str]:
    return set(_kql_rows(query, case_id, table, columns, rows))


def _kql_rows(
    query: str, case_id: str, table: str, columns: list[tuple[str, str]], rows: list[list[Any]]
) -> list[str]:
    import duckdb_kql

    connection = duckdb_kql.connect()
    definition = ", ".join(f'"{name}" {sql_type}' for name, sql_type in columns)
    connection.execute(f'CREATE TABLE "{table}" ({definition})')
    placeholders = ", ".join("?" for _ in columns)
    connection.executemany(f'INSERT INTO "{table}" VALUES ({placeholders})', rows)
    result = duckdb_kql.kql(connection, f"{query}\n| project case_id = {case_id}")
    return [case for (case,) in result.fetchall()]


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


# The k8s_audit table a data lake declares over raw audit JSON: the Event's nested members.
SPARK_AUDIT_SCHEMA = (
    "kind STRING, apiVersion STRING, level STRING, auditID STRING, stage STRING, "
    "requestURI STRING, verb STRING, userAgent STRING, sourceIPs ARRAY<STRING>, "
    "user STRUCT<username: STRING, uid: STRING, groups: ARRAY<STRING>, "
    "extra: MAP<STRING, ARRAY<STRING>>>, "
    "impersonatedUser STRUCT<username: STRING, groups: ARRAY<STRING>>, "
    "objectRef STRUCT<resource: STRING, subresource: STRING, namespace: STRING, name: STRING, "
    "apiGroup: STRING, apiVersion: STRING>, "
    "responseStatus STRUCT<code: BIGINT>, "
    "requestObject STRUCT<spec: STRUCT<expirationSeconds: BIGINT, audiences: ARRAY<STRING>, "
    "boundObjectRef: STRUCT<kind: STRING, name: STRING>>>, "
    "annotations MAP<STRING, STRING>, requestReceivedTimestamp STRING, stageTimestamp STRING"
)


@functools.cache
def spark_session() -> Any:
    """One local Spark for the whole test run (it takes seconds to start), stopped at exit."""
    from pyspark.sql import SparkSession

    require("java", "default-jdk-headless")  # else PySpark's JAVA_GATEWAY_EXITED
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("k8s-token-request-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    atexit.register(spark.stop)
    return spark


def run_spark(query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path) -> set[str]:
    """Local PySpark: the audit log read as JSON lines into the k8s_audit table, the Spark SQL
    run on it."""
    log = tmp / "audit.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    spark = spark_session()
    spark.read.schema(SPARK_AUDIT_SCHEMA).json(str(log)).createOrReplaceTempView("k8s_audit")
    return {row.auditID for row in spark.sql(query).select("auditID").collect()}


# engine name -> (convert.py target it executes, runner)
ENGINES: dict[str, tuple[str, Runner]] = {
    "eql": ("elastic-eql", eql_runner(elastic_kubernetes)),
    "duckdb": ("duckdb", run_duckdb),
    "lucene": ("elastic-lucene", lucene_runner(elastic_kubernetes, elastic_kubernetes_types)),
    "opensearch-lucene": ("opensearch", lucene_runner(opensearch_dynamic)),
    "eks-eql": ("elastic-eks-eql", eql_runner(elastic_aws_eks_audit)),
    "eks-lucene": (
        "elastic-eks-lucene",
        lucene_runner(elastic_aws_eks_audit, elastic_aws_eks_types),
    ),
    "gke-eql": ("elastic-gke-eql", eql_runner(gke_elastic)),
    "gke-lucene": ("elastic-gke-lucene", lucene_runner(gke_elastic, elastic_gcp_types)),
    "aks-lucene": ("elastic-aks-lucene", lucene_runner(aks_elastic)),
    "kql-aksaudit": ("sentinel-aksaudit", run_kql),
    "kql-aksauditadmin": ("sentinel-aksauditadmin", run_kql),
    "spark": ("spark-sql", run_spark),
    "kql-azurediagnostics": ("sentinel-azurediagnostics", run_kql_azurediagnostics),
}


# ---------------------------------------------------------------------------------------------
# Correlation rules: each runner executes a correlation query over a sequence of events (in
# its platform's shape) and returns the query's result rows, one dict per correlated group
# (an EQL sequence: one per matched sequence, its `by` values as the row).

CorrelationRunner = Callable[[str, Any, Sequence[dict[str, Any]], Path], list[dict[str, Any]]]


def correlation_duckdb(
    query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path
) -> list[dict[str, Any]]:
    """`convert.py replay`: the correlation over the events split into two files, the second
    half first (replay reads all files as one input, in any order), its base rules' events
    read once as replay reads them."""
    from convert import REPLAY_TARGET, convert_plain
    from k8s_audit_detect.correlate import correlation_rule
    from k8s_audit_detect.correlations import base_rules
    from k8s_audit_detect.replay import base_rule, run_replay

    half = len(events) // 2
    logs = [tmp / "b.jsonl", tmp / "a.jsonl"]
    for log, part in zip(logs, [events[half:], events[:half]], strict=True):
        log.write_text("".join(json.dumps(e) + "\n" for e in part), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    converted = convert_plain(REPLAY_TARGET, list(base_rules(rule)))
    correlations = [correlation_rule(rule, query, converted)]
    bases = [base_rule(base, base_query) for base, base_query in converted]
    run_replay(logs, [], out, err, correlations=correlations, bases=bases)
    alerts = [json.loads(line) for line in out.getvalue().split("\n") if line]
    return [alert["group"] | {"events": alert["events"]} for alert in alerts]


def correlation_kql(table: str) -> CorrelationRunner:
    """duckdb-kql over rows of an AKS table (AKSAudit-shaped) with TimeGenerated."""

    def run(
        query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path
    ) -> list[dict[str, Any]]:
        names = [*AKS_AUDIT_STRINGS, *AKS_AUDIT_DYNAMICS]
        types = ["VARCHAR"] * len(AKS_AUDIT_STRINGS) + ["JSON"] * len(AKS_AUDIT_DYNAMICS)
        rows = [
            [row[n] if n in AKS_AUDIT_STRINGS else _json_or_null(row[n]) for n in names]
            + [utc(event["requestReceivedTimestamp"])]
            for event, row in ((event, aks_audit_row(event)) for event in events)
        ]
        columns = [*zip(names, types, strict=True), ("TimeGenerated", "TIMESTAMP")]
        return _kql_records(query, table, columns, rows)

    return run


def correlation_azurediagnostics(
    query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path
) -> list[dict[str, Any]]:
    """duckdb-kql over AzureDiagnostics rows of both audit categories."""
    rows = [
        [record["category"], record["properties"]["log"], utc(record["time"])]
        for event in events
        for record in aks_diagnostic_records(event)
    ]
    columns = [("Category", "VARCHAR"), ("log_s", "VARCHAR"), ("TimeGenerated", "TIMESTAMP")]
    return _kql_records(query, "AzureDiagnostics", columns, rows)


def _kql_records(
    query: str, table: str, columns: list[tuple[str, str]], rows: list[list[Any]]
) -> list[dict[str, Any]]:
    import duckdb_kql

    connection = duckdb_kql.connect()
    definition = ", ".join(f'"{name}" {sql_type}' for name, sql_type in columns)
    connection.execute(f'CREATE TABLE "{table}" ({definition})')
    placeholders = ", ".join("?" for _ in columns)
    connection.executemany(f'INSERT INTO "{table}" VALUES ({placeholders})', rows)
    result = duckdb_kql.kql(connection, query)
    names = [column[0] for column in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def correlation_spark(
    query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path
) -> list[dict[str, Any]]:
    """Local PySpark: the events as the k8s_audit table, the correlation's Spark SQL on it."""
    log = tmp / "audit.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    spark = spark_session()
    spark.read.schema(SPARK_AUDIT_SCHEMA).json(str(log)).createOrReplaceTempView("k8s_audit")
    return [row.asDict() for row in spark.sql(query).collect()]


def correlation_eql(shape: Shape) -> CorrelationRunner:
    """Elastic's eql engine over the documents in time order (as Elasticsearch sorts them by
    @timestamp), each event's time in the engine's own unit (Windows FILETIME, 10^7 a
    second: eql.walkers DEFAULT_TIME_UNIT), so `maxspan` means what it says. A row per
    sequence: its `by` fields' values."""
    import datetime as dt
    import re

    def run(
        query: str, rule: Any, events: Sequence[dict[str, Any]], tmp: Path
    ) -> list[dict[str, Any]]:
        import eql
        import eql.utils
        from eql.parser import elasticsearch_syntax, ignore_missing_functions

        def filetime(text: str) -> int:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            return int(when.timestamp() * 10**7)

        by = re.match(r"sequence by (.+?) with maxspan=", query)
        assert by, query
        fields = [field.strip() for field in by.group(1).split(",")]
        eql.utils.CASE_INSENSITIVE = False
        with elasticsearch_syntax, ignore_missing_functions:
            parsed = eql.parse_query(query)
        hits: list[Any] = []
        engine = eql.PythonEngine()
        engine.add_output_hook(hits.append)
        engine.add_query(parsed)
        timed = sorted(  # by time only; events at the same time keep their order
            ((filetime(event["requestReceivedTimestamp"]), shape(event)) for event in events),
            key=lambda pair: pair[0],
        )
        try:
            engine.stream_events([eql.Event("any", when, doc) for when, doc in timed if doc])
        finally:
            eql.utils.CASE_INSENSITIVE = True
        rows = []
        for hit in hits:
            first = hit.events[0].data
            rows.append({field: _path(first, field) for field in fields})
        return rows

    return run


def _path(doc: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None  # type: ignore[assignment]
    return doc


# engine name -> (convert.py target it executes, runner)
CORRELATION_ENGINES: dict[str, tuple[str, CorrelationRunner]] = {
    "duckdb": ("duckdb", correlation_duckdb),
    "eql": ("elastic-eql", correlation_eql(elastic_kubernetes)),
    "eks-eql": ("elastic-eks-eql", correlation_eql(elastic_aws_eks_audit)),
    "kql-aksaudit": ("sentinel-aksaudit", correlation_kql("AKSAudit")),
    "kql-azurediagnostics": ("sentinel-azurediagnostics", correlation_azurediagnostics),
    "spark": ("spark-sql", correlation_spark),
}
