"""Correlation rules: the queries no engine here runs, pinned as reviewed strings (the others
run in test_correlations.py), Loki's through Grafana's grammar too; the targets table's
claims about correlation support; the mapping check pySigma's strict mapping leaves out; and
which filters reach the correlations' base rules.

Review notes:
- Splunk: `kube_audit` in each subsearch of a multisearch; the stock backend's time bins
  (`bin _time span=`: tumbling); the stolen-token count is of the last sourceIPs element
  (`dc(eval(mvindex('sourceIPs{}', -1)))`), the credential id joined by `rename` into one
  field; the ordered sequence: the earliest denial in a bin before its latest grant.
- ES|QL: one line (the pipeline escapes a value's line breaks); `date_trunc` buckets; the
  ordered sequence as `case()` times per rule and `min`/`max` in the bucket; `@timestamp` is
  the integration's (unverified that it is the Event's own time).
- Loki: the stock backend's `count without (...) (sum by (...) (count_over_time(...)))`, the
  sliding range `[10m]` of LogQL's range vectors, evaluated at each step.
- CloudWatch: our own backend's templates, `count_distinct` in `bin(10m)`; Logs Insights
  documents count_distinct as approximate above its cardinality limit (unverified where).
"""

from __future__ import annotations

import pytest
from test_logql import parse

from convert import TARGETS, TARGETS_BY_NAME, load_rules
from k8s_audit_detect import correlations
from k8s_audit_detect.rules import rule_stem

STEMS = {
    "minting_burst": "correlation_credential_access_kubernetes_serviceaccount_token_minting_burst",
    "probe_then_mint": (
        "correlation_credential_access_kubernetes_serviceaccount_token_probe_then_mint"
    ),
    "used_from_another_place": (
        "correlation_lateral_movement_kubernetes_pod_token_used_from_another_place"
    ),
    "minted_then_used": (
        "correlation_credential_access_kubernetes_serviceaccount_token_minted_then_used"
    ),
}
EXPECTED = {
    ("splunk", "", "minting_burst"): (
        '`kube_audit` verb="create" objectRef.resource="serviceaccounts" '
        'objectRef.subresource="token" responseStatus.code=201 stage IN ("ResponseComplete", '
        '"Panic") OR NOT stage=* NOT (user.username IN ("system:node:*", '
        '"system:kube-controller-manager"))\n'
        "\n"
        "| bin _time span=10m\n"
        "| stats dc(requestURI) as value_count by _time user.username\n"
        "\n"
        "| search value_count >= 3\n"
        "| `kubernetes_serviceaccount_token_minting_burst_filter`"
    ),
    ("splunk", "", "probe_then_mint"): (
        "| multisearch\n"
        '[ search `kube_audit` verb="create" objectRef.resource="serviceaccounts" '
        'objectRef.subresource="token" responseStatus.code=403 stage IN ("ResponseComplete", '
        '"Panic") OR NOT stage=* NOT (user.username IN ("system:node:*", '
        '"system:kube-controller-manager")) | eval '
        'event_type="kubernetes_serviceaccount_token_request_denied" ]\n'
        '[ search `kube_audit` verb="create" objectRef.resource="serviceaccounts" '
        'objectRef.subresource="token" responseStatus.code=201 stage IN ("ResponseComplete", '
        '"Panic") OR NOT stage=* NOT (user.username IN ("system:node:*", '
        '"system:kube-controller-manager")) | eval '
        'event_type="kubernetes_serviceaccount_token_minted" ]\n'
        "| eval sigma_time=_time\n"
        "| bin _time span=15m\n"
        '| stats min(eval(if(event_type="kubernetes_serviceaccount_token_request_denied", '
        "sigma_time, null()))) as sigma_first "
        'max(eval(if(event_type="kubernetes_serviceaccount_token_minted", sigma_time, '
        "null()))) as sigma_last min(sigma_time) as first_seen max(sigma_time) as last_seen "
        "values(auditID) as events by _time user.username\n"
        "| where sigma_last > sigma_first\n"
        "| `kubernetes_serviceaccount_token_probe_then_mint_filter`"
    ),
    ("splunk", "", "used_from_another_place"): (
        "| multisearch\n"
        '[ search `kube_audit` verb="create" objectRef.resource="serviceaccounts" '
        'objectRef.subresource="token" responseStatus.code=201 user.username="system:node:*" '
        '"annotations.authentication.kubernetes.io/issued-credential-id"="JTI=*" stage IN '
        '("ResponseComplete", "Panic") OR NOT stage=* | eval '
        'event_type="kubernetes_pod_token_minted_by_kubelet" | rename '
        '"annotations.authentication.kubernetes.io/issued-credential-id" as credential_id ]\n'
        "[ search `kube_audit` "
        '"user.extra.authentication.kubernetes.io/credential-id{}"="*" '
        '"user.extra.authentication.kubernetes.io/pod-name{}"="*" stage IN '
        '("ResponseComplete", "Panic") OR NOT stage=* | eval '
        'event_type="kubernetes_pod_token_used" | rename '
        '"user.extra.authentication.kubernetes.io/credential-id{}" as credential_id ]\n'
        "\n"
        "| bin _time span=1h\n"
        "| stats dc(eval(mvindex('sourceIPs{}', -1))) as value_count by _time credential_id\n"
        "\n"
        "| search value_count >= 3\n"
        "| `kubernetes_pod_token_used_from_another_place_filter`"
    ),
    ("splunk", "", "minted_then_used"): (
        "| multisearch\n"
        '[ search `kube_audit` verb="create" objectRef.resource="serviceaccounts" '
        'objectRef.subresource="token" responseStatus.code=201 stage IN '
        '("ResponseComplete", "Panic") OR NOT stage=* NOT (user.username IN '
        '("system:node:*", "system:kube-controller-manager")) | eval '
        'event_type="kubernetes_serviceaccount_token_minted" | rename '
        '"annotations.authentication.kubernetes.io/issued-credential-id" as '
        "credential_id ]\n"
        '[ search `kube_audit` user.username="system:serviceaccount:*" '
        '"user.extra.authentication.kubernetes.io/credential-id{}"="*" stage IN '
        '("ResponseComplete", "Panic") OR NOT stage=* | eval '
        'event_type="kubernetes_serviceaccount_token_used" | rename '
        '"user.extra.authentication.kubernetes.io/credential-id{}" as credential_id ]\n'
        "| eval sigma_time=_time\n"
        "| bin _time span=1h\n"
        '| stats min(eval(if(event_type="kubernetes_serviceaccount_token_minted", '
        "sigma_time, null()))) as sigma_first "
        'max(eval(if(event_type="kubernetes_serviceaccount_token_used", sigma_time, '
        "null()))) as sigma_last min(sigma_time) as first_seen max(sigma_time) as "
        "last_seen values(auditID) as events by _time credential_id\n"
        "| where sigma_last > sigma_first\n"
        "| `kubernetes_serviceaccount_token_minted_then_used_filter`"
    ),
    ("elastic-esql", "", "minting_burst"): (
        "from logs-kubernetes.audit_logs-* metadata _id, _index, _version | where "
        'kubernetes.audit.verb=="create" and '
        'kubernetes.audit.objectRef.resource=="serviceaccounts" and '
        'kubernetes.audit.objectRef.subresource=="token" and '
        "kubernetes.audit.responseStatus.code==201 and (kubernetes.audit.stage in "
        '("ResponseComplete", "Panic") or kubernetes.audit.stage is null) and not '
        '(starts_with(kubernetes.audit.user.username, "system:node:") or '
        'kubernetes.audit.user.username=="system:kube-controller-manager") | eval '
        "timebucket=date_trunc(10minutes, @timestamp) | stats "
        "value_count=count_distinct(kubernetes.audit.requestURI), "
        "kubernetes.audit.impersonatedUser.username=values(kubernetes.audit.impersonatedUser.u"
        "sername), source.ip=values(source.ip), "
        "kubernetes.audit.userAgent=values(kubernetes.audit.userAgent), "
        "kubernetes.audit.objectRef.namespace=values(kubernetes.audit.objectRef.namespace), "
        "kubernetes.audit.objectRef.name=values(kubernetes.audit.objectRef.name), "
        "kubernetes.audit.responseStatus.code=values(kubernetes.audit.responseStatus.code) "
        "by timebucket, kubernetes.audit.user.username | where value_count >= 3"
    ),
    ("elastic-esql", "", "probe_then_mint"): (
        "from logs-kubernetes.audit_logs-* metadata _id, _index, _version | where "
        '(kubernetes.audit.verb=="create" and '
        'kubernetes.audit.objectRef.resource=="serviceaccounts" and '
        'kubernetes.audit.objectRef.subresource=="token" and '
        "kubernetes.audit.responseStatus.code==403 and (kubernetes.audit.stage in "
        '("ResponseComplete", "Panic") or kubernetes.audit.stage is null) and not '
        '(starts_with(kubernetes.audit.user.username, "system:node:") or '
        'kubernetes.audit.user.username=="system:kube-controller-manager")) or '
        '(kubernetes.audit.verb=="create" and '
        'kubernetes.audit.objectRef.resource=="serviceaccounts" and '
        'kubernetes.audit.objectRef.subresource=="token" and '
        "kubernetes.audit.responseStatus.code==201 and (kubernetes.audit.stage in "
        '("ResponseComplete", "Panic") or kubernetes.audit.stage is null) and not '
        '(starts_with(kubernetes.audit.user.username, "system:node:") or '
        'kubernetes.audit.user.username=="system:kube-controller-manager")) | eval '
        'event_type=case(kubernetes.audit.verb=="create" and '
        'kubernetes.audit.objectRef.resource=="serviceaccounts" and '
        'kubernetes.audit.objectRef.subresource=="token" and '
        "kubernetes.audit.responseStatus.code==403 and (kubernetes.audit.stage in "
        '("ResponseComplete", "Panic") or kubernetes.audit.stage is null) and not '
        '(starts_with(kubernetes.audit.user.username, "system:node:") or '
        'kubernetes.audit.user.username=="system:kube-controller-manager"), '
        '"kubernetes_serviceaccount_token_request_denied", kubernetes.audit.verb=="create" '
        'and kubernetes.audit.objectRef.resource=="serviceaccounts" and '
        'kubernetes.audit.objectRef.subresource=="token" and '
        "kubernetes.audit.responseStatus.code==201 and (kubernetes.audit.stage in "
        '("ResponseComplete", "Panic") or kubernetes.audit.stage is null) and not '
        '(starts_with(kubernetes.audit.user.username, "system:node:") or '
        'kubernetes.audit.user.username=="system:kube-controller-manager"), '
        '"kubernetes_serviceaccount_token_minted") | eval timebucket=date_trunc(15minutes, '
        "@timestamp), "
        'sigma_first=case(event_type=="kubernetes_serviceaccount_token_request_denied", '
        '@timestamp), sigma_last=case(event_type=="kubernetes_serviceaccount_token_minted", '
        "@timestamp) | stats first_seen=min(@timestamp), last_seen=max(@timestamp), "
        "sigma_first=min(sigma_first), sigma_last=max(sigma_last), "
        "kubernetes.audit.impersonatedUser.username=values(kubernetes.audit.impersonatedUser.u"
        "sername), source.ip=values(source.ip), "
        "kubernetes.audit.userAgent=values(kubernetes.audit.userAgent), "
        "kubernetes.audit.objectRef.namespace=values(kubernetes.audit.objectRef.namespace), "
        "kubernetes.audit.objectRef.name=values(kubernetes.audit.objectRef.name), "
        "kubernetes.audit.responseStatus.code=values(kubernetes.audit.responseStatus.code) "
        "by timebucket, kubernetes.audit.user.username | where sigma_last > sigma_first"
    ),
    ("loki", "", "minting_burst"): (
        "count without (requestURI) (sum by (user_username, requestURI) "
        '(count_over_time({job="kubernetes-audit"} | json | verb=~`^create$` and '
        "objectRef_resource=~`^serviceaccounts$` and objectRef_subresource=~`^token$` and "
        "responseStatus_code=201 and (stage=~`^ResponseComplete$` or stage=~`^Panic$` or "
        "stage=``) and user_username!~`^system:node:.*` and "
        "user_username!~`^system:kube\\-controller\\-manager$` | line_format "
        '"{{.user_username}} {{.impersonatedUser_username}} {{.userAgent}} '
        '{{.objectRef_namespace}} {{.objectRef_name}} {{.responseStatus_code}}" [10m]))) >= 3'
    ),
    ("cloudwatch-eks", "eks", "minting_burst"): (
        "fields @timestamp, @logStream, @message\n"
        "| filter @logStream like /^kube-apiserver-audit/\n"
        "| filter verb =~ /^create$/ and objectRef.resource =~ /^serviceaccounts$/ and "
        "objectRef.subresource =~ /^token$/ and responseStatus.code = 201 and (stage =~ "
        "/^ResponseComplete$/ or stage =~ /^Panic$/ or not ispresent(stage)) and not "
        "(user.username =~ /^system:node:/ or user.username =~ "
        "/^system:kube-controller-manager$/) and not user.username =~ /^eks:/\n"
        "| stats count_distinct(requestURI) as value_count, min(@timestamp) as first_seen, "
        "max(@timestamp) as last_seen by bin(10m), user.username\n"
        "| filter value_count >= 3"
    ),
}


@pytest.mark.parametrize(("target", "variant", "rule"), list(EXPECTED), ids="-".join)
def test_correlation_query_is_the_reviewed_one(target, variant, rule, query_for) -> None:
    variant_tuple = (variant,) if variant else ()
    assert query_for(target, variant_tuple, STEMS[rule]) == EXPECTED[target, variant, rule]


def test_aksauditadmin_runs_the_executed_aksaudit_query_on_its_table(query_for) -> None:
    for stem in (STEMS["minting_burst"], STEMS["probe_then_mint"]):
        tested = query_for("sentinel-aksaudit", ("aks",), stem)
        admin = query_for("sentinel-aksauditadmin", ("aks",), stem)
        assert admin == tested.replace("(AKSAudit\n", "(AKSAuditAdmin\n")
        assert "AKSAudit\n" not in admin


def test_every_loki_correlation_query_parses(generated) -> None:
    queries = [
        text.rstrip("\n")
        for path, text in generated.items()
        if path.parts[-3:-1] and "loki" in path.parts and path.name.startswith("correlation_")
    ]
    assert queries and parse(queries) == ["ok"] * len(queries)


# One correlation of each type (and one with aliases) over simple base rules: a target that
# claims a feature converts it; a backend without any refuses.
SYNTHETIC = """
title: Base A
id: 3f6ad1b4-0a39-4b6e-8f0e-3d3f0c7a1a01
name: base_a
status: test
logsource: {product: kubernetes, service: audit}
detection: {selection: {verb: create}, condition: selection}
---
title: Base B
id: 3f6ad1b4-0a39-4b6e-8f0e-3d3f0c7a1a02
name: base_b
status: test
logsource: {product: kubernetes, service: audit}
detection: {selection: {verb: delete}, condition: selection}
---
title: Correlation
id: 3f6ad1b4-0a39-4b6e-8f0e-3d3f0c7a1a03
name: synthetic
status: test
correlation: CORRELATION
"""
CORRELATIONS = {
    "event_count": "{type: event_count, rules: [base_a], group-by: [user.username], "
    "timespan: 5m, condition: {gte: 2}}",
    "value_count": "{type: value_count, rules: [base_a], group-by: [user.username], "
    "timespan: 5m, condition: {gte: 2, field: objectRef.name}}",
    "temporal": "{type: temporal, rules: [base_a, base_b], group-by: [user.username], "
    "timespan: 5m}",
    "temporal_ordered": "{type: temporal_ordered, rules: [base_a, base_b], "
    "group-by: [user.username], timespan: 5m}",
    "aliases": "{type: temporal, rules: [base_a, base_b], group-by: [who], timespan: 5m, "
    "aliases: {who: {base_a: user.username, base_b: objectRef.name}}}",
}
CLAIMS = [
    (target, feature)
    for target in TARGETS
    for feature, why in target.correlation_support().items()
    if not why
]


@pytest.mark.parametrize(("target", "feature"), CLAIMS, ids=lambda x: getattr(x, "name", x))
def test_a_claimed_correlation_feature_converts(target, feature, tmp_path) -> None:
    from sigma.collection import SigmaCollection

    from convert import convert_correlations

    path = tmp_path / "correlation_synthetic.yml"
    path.write_text(SYNTHETIC.replace("CORRELATION", CORRELATIONS[feature]), encoding="utf-8")
    collection = SigmaCollection.load_ruleset([path])
    (query,) = convert_correlations(target, collection).values()
    assert query.strip()


def test_targets_without_correlation_backends_say_why() -> None:
    for target in TARGETS:
        support = target.correlation_support()
        if target.correlation_backend is None:
            assert all(support.values()), target.name
        assert all(why == "" or len(why) > 20 for why in support.values())


def test_the_environments_trusted_minters_are_not_trusted_users() -> None:
    """Every environment and example organisation filter names the minting base rules, and
    none names the stolen-token rule's or the base rule of a token's uses: a minter an
    environment trusts (calico-node, an EKS controller) has a pod token that can be stolen like
    any other, and trusting who may mint is not trusting whoever holds the token."""
    import yaml

    from k8s_audit_detect.paths import ROOT

    minting = {
        "kubernetes_serviceaccount_token_minted",
        "kubernetes_serviceaccount_token_request_denied",
    }
    stolen = {
        "kubernetes_pod_token_minted_by_kubelet",
        "kubernetes_pod_token_used",
        "kubernetes_serviceaccount_token_used",
    }
    paths = [*(ROOT / "sigma" / "filters").rglob("*.yml"), *(ROOT / "examples").rglob("*.yml")]
    assert paths
    for path in paths:
        named = set(yaml.safe_load(path.read_text(encoding="utf-8"))["filter"]["rules"])
        assert minting <= named, path
        assert not stolen & named, path


def test_correlation_rules_and_their_base_rules(token_rule) -> None:
    """Each correlation's base rules alert only through it (generate: false), every rule and
    correlation has a snake_case name, and the minting base rules are the TokenRequest rule's
    events split by outcome (mutually exclusive: 201 or 403)."""
    import re

    collection = load_rules()
    found = correlations.correlation_rules(collection)
    assert {rule_stem(r) for r in found} == set(STEMS.values())
    for rule in found:
        assert re.fullmatch(r"[a-z0-9_]+", rule.name)
        assert not rule.generate
        for base in correlations.base_rules(rule):
            assert re.fullmatch(r"[a-z0-9_]+", base.name)
            assert not base._output, base.name
    assert token_rule._output
    minted, denied = (
        collection[name]
        for name in (
            "kubernetes_serviceaccount_token_minted",
            "kubernetes_serviceaccount_token_request_denied",
        )
    )
    codes = [r.detection.detections["selection"].detection_items[-1] for r in (minted, denied)]
    assert [(item.field, item.value[0].number) for item in codes] == [
        ("responseStatus.code", 201),
        ("responseStatus.code", 403),
    ]


@pytest.mark.parametrize(
    "target",
    [t for t in TARGETS if t.correlation_backend],
    ids=lambda t: t.name,
)
def test_an_unmapped_group_by_is_one_clear_error(target, tmp_path) -> None:
    """pySigma's strict mapping skips correlation rules: this project's check does not."""
    from sigma.collection import SigmaCollection

    from convert import convert_correlations
    from k8s_audit_detect import UserError

    feature = next(f for f, why in target.correlation_support().items() if not why)
    correlation = CORRELATIONS[feature].replace("[user.username]", "[spec.nodeName]")
    correlation = correlation.replace("[who]", "[spec.nodeName]")
    path = tmp_path / "correlation_synthetic.yml"
    path.write_text(SYNTHETIC.replace("CORRELATION", correlation), encoding="utf-8")
    with pytest.raises(UserError) as raised:
        convert_correlations(target, SigmaCollection.load_ruleset([path]))
    message = str(raised.value)
    assert "spec.nodeName" in message and "does not map" in message
    assert len(message.splitlines()) == 1
    assert TARGETS_BY_NAME[target.name].pipelines[0] in message
