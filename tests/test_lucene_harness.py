"""The Lucene harness (tests/lucene/LuceneMatch.java) models Elasticsearch's query_string on
the field types a mapping gives: checked here on small documents, so an engine test that
passes on it means what it says."""

from __future__ import annotations

from pathlib import Path

import pytest
from engines import run_lucene

DOCS = [
    ("masters", {"groups": ["system:masters", "system:authenticated"], "code": 403}),
    ("authenticated", {"groups": ["system:authenticated"], "code": 201}),
    ("capitalised", {"groups": "Masters", "code": 500, "user": "Alice"}),
]
TYPES = {"groups": "text", "code": "long"}.get


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # text: the standard analyzer lowercases and keeps "system:masters" one token (a colon
        # between letters does not break a word, UAX #29)
        ("groups:masters", {"capitalised"}),
        ("groups:MASTERS", {"capitalised"}),
        ("groups:system\\:masters", {"masters"}),
        ("groups:system", set()),
        # keyword: exact and case-sensitive
        ("user:Alice", {"capitalised"}),
        ("user:alice", set()),
        # long: numeric terms and ranges, also Elasticsearch's f:>=v form
        ("code:403", {"masters"}),
        ("code:[400 TO 499]", {"masters"}),
        ("code:>=403", {"masters", "capitalised"}),
        ("code:<403", {"authenticated"}),
        ("code:>500", set()),
        # ...escaped or not: Elasticsearch documents that < and > cannot be escaped
        ("user:\\>A", {"capitalised"}),
        # a query of negative clauses only matches everything else (fixNegativeQueryIfNeeded)
        ("NOT code:403", {"authenticated", "capitalised"}),
        ("NOT _exists_:user", {"masters", "authenticated"}),
    ],
)
def test_lucene_harness_models_elasticsearch_field_types(
    query: str, expected: set[str], tmp_path: Path
) -> None:
    assert run_lucene(query, DOCS, tmp_path, lambda path: TYPES(path, "keyword")) == expected


def test_lucene_harness_leaves_out_fields_the_mapping_does_not_index(tmp_path: Path) -> None:
    def hidden(path: str) -> str:
        return "none" if path.startswith("spec") else "keyword"

    docs = [("a", {"spec": {"nodeName": "evil"}}), ("b", {})]
    assert run_lucene("spec.nodeName:evil", docs, tmp_path, hidden) == set()
    assert run_lucene("_exists_:spec.nodeName", docs, tmp_path, hidden) == set()
    assert run_lucene("spec.nodeName:evil", docs, tmp_path) == {"a"}


def test_a_missing_engine_names_the_package_to_install(monkeypatch) -> None:
    """Without Java the Lucene and Spark tests fail saying what to install, not with
    PySpark's JAVA_GATEWAY_EXITED."""
    import engines

    monkeypatch.setattr(engines.shutil, "which", lambda name: None)
    with pytest.raises(AssertionError, match="apt-get install default-jdk-headless"):
        engines.lucene_classpath()
