"""Queries that no engine here can run, pinned as reviewed strings (Lucene, EQL and DuckDB SQL
are executed in test_engines.py instead): the shipped rule's, with the shipped environment
filters and no organisation filter (a fork's own filters leave these pins as they are).

Review notes (what a SOC engineer checked in each):
- Splunk: starts from the site's `kube_audit` macro, ends in the rule's `_filter` macro. SPL
  evaluates OR before the implicit AND, so `stage IN (...) OR NOT stage=*` is one clause:
  the final stage, or no stage recorded. `IN` with `*` is a wildcard match, case-insensitive.
- Loki: LogQL also parses with Grafana's grammar (test_logql.py). `| json` flattens with "_";
  `=~`/`!~` are case-sensitive regular expressions (the backend's (?i) removed), anchored
  with ^$; a missing stage label is `stage=```; the exclusions are `!~`, so a missing user
  name alerts. The stream selector {job="kubernetes-audit"} is the one site-specific part.
- ES|QL on GKE records (GCP integration, with the gke filters): the rule's verb, resource and
  subresource are one RLIKE on event.action (the method name, any API group and version,
  Lucene's regular expression syntax, matching the whole name), not three searches; no stage
  test (GKE has none); GKE's controllers by exact name, its managed namespace by prefix.
- CloudWatch for EKS carries the eks filter: `not user.username =~ /^eks:/`.
- CloudWatch Logs Insights (EKS, our own backend in k8s_audit_detect/cloudwatch.py, its
  constructs pinned in test_cloudwatch_backend.py): only the audit streams of the cluster's log
  group; anchored, case-sensitive regular expressions (the pipeline removes the backend's
  (?i)); `not ispresent()` for a missing stage; `not` applies to the parenthesised exclusions.
- LogScale: the saved search $kube_audit() is the site's repository and type; regexes /^..$/
  (case-sensitive: the backend's /i flag removed); `stage!=*` finds events without a stage;
  LogScale binds `or` tighter than the implicit `and`, as the CrowdStrike backend encodes,
  so the stage clause is one group.
- Sumo Logic Cloud SIEM: selected as Sumo's own Kubernetes (or EKS) rules select; every raw
  path read from fields['message.<path>'], where Sumo's parsers put the Event; the backend's
  isEmpty(message.stage) is rewritten to isEmpty(fields['message.stage']) by the pipeline.
- ES|QL: the Kubernetes integration's data stream in FROM; `==` and starts_with are exact
  and case sensitive, as Kubernetes user names are. A missing user.username makes the NOT
  null (no alert); a real audit Event always has one.
"""

from __future__ import annotations

import json

import pytest

EXPECTED = {
    "logscale": (
        "$kube_audit() | verb=/^create$/ objectRef.resource=/^serviceaccounts$/ "
        "objectRef.subresource=/^token$/ stage=/^ResponseComplete$/ or stage=/^Panic$/ "
        "or stage!=* not (user.username=/^system:node:/ "
        "or user.username=/^system:kube-controller-manager$/)"
    ),
    "cloudwatch-eks": (
        "fields @timestamp, @logStream, @message\n"
        "| filter @logStream like /^kube-apiserver-audit/\n"
        "| filter verb =~ /^create$/ and objectRef.resource =~ /^serviceaccounts$/ "
        "and objectRef.subresource =~ /^token$/ "
        "and (stage =~ /^ResponseComplete$/ or stage =~ /^Panic$/ "
        "or not ispresent(stage)) "
        "and not (user.username =~ /^system:node:/ "
        "or user.username =~ /^system:kube-controller-manager$/) "
        "and not user.username =~ /^eks:/\n"
        "| sort @timestamp desc"
    ),
    "elastic-gke-esql": (
        "from logs-gcp.audit-* metadata _id, _index, _version "
        '| where event.action rlike "io\\\\.k8s\\\\.([^.]+\\\\.)+v[0-9]+((alpha|beta)[0-9]+)?'
        '\\\\.serviceaccounts\\\\.token\\\\.create" '
        'and not (starts_with(client.user.email, "system:node:") '
        'or client.user.email=="system:kube-controller-manager") '
        'and not (client.user.email in ("system:gcp-controller-manager", '
        '"system:gke-controller-manager") '
        'or starts_with(client.user.email, "system:serviceaccount:gke-managed-system:"))'
    ),
    "loki": (
        '{job="kubernetes-audit"} | json | verb=~`^create$` '
        "and objectRef_resource=~`^serviceaccounts$` "
        "and objectRef_subresource=~`^token$` "
        "and (stage=~`^ResponseComplete$` or stage=~`^Panic$` or stage=``) "
        "and user_username!~`^system:node:.*` "
        "and user_username!~`^system:kube\\-controller\\-manager$` "
        '| line_format "{{.user_username}} {{.impersonatedUser_username}} {{.userAgent}} '
        "{{.objectRef_namespace}} {{.objectRef_name}} {{.responseStatus_code}} "
        '{{.annotations_authorization_k8s_io_decision}}"'
    ),
    "splunk": (
        '`kube_audit` verb="create" objectRef.resource="serviceaccounts" '
        'objectRef.subresource="token" stage IN ("ResponseComplete", "Panic") OR NOT stage=* '
        'NOT (user.username IN ("system:node:*", "system:kube-controller-manager")) '
        "| table user.username,user.groups{},impersonatedUser.username,sourceIPs{},userAgent,"
        "objectRef.namespace,objectRef.name,responseStatus.code,"
        "annotations.authorization.k8s.io/decision "
        "| `kubernetes_serviceaccount_token_requested_filter`"
    ),
    # The AWS integration's EKS data stream with the eks filter. Unlike Elastic's own rule on it,
    # kube-system service accounts, denied attempts (403) and every closing stage still alert.
    "elastic-eks-esql": (
        "from logs-aws.eks_audit-* metadata _id, _index, _version "
        '| where aws.eks.audit.verb=="create" '
        'and aws.eks.audit.objectRef.resource=="serviceaccounts" '
        'and aws.eks.audit.objectRef.subresource=="token" '
        'and (aws.eks.audit.stage in ("ResponseComplete", "Panic") '
        "or aws.eks.audit.stage is null) "
        'and not (starts_with(aws.eks.audit.user.username, "system:node:") '
        'or aws.eks.audit.user.username=="system:kube-controller-manager") '
        'and not starts_with(aws.eks.audit.user.username, "eks:")'
    ),
    "elastic-esql": (
        "from logs-kubernetes.audit_logs-* metadata _id, _index, _version "
        '| where kubernetes.audit.verb=="create" '
        'and kubernetes.audit.objectRef.resource=="serviceaccounts" '
        'and kubernetes.audit.objectRef.subresource=="token" '
        'and (kubernetes.audit.stage in ("ResponseComplete", "Panic") '
        "or kubernetes.audit.stage is null) "
        'and not (starts_with(kubernetes.audit.user.username, "system:node:") '
        'or kubernetes.audit.user.username=="system:kube-controller-manager")'
    ),
}


@pytest.mark.parametrize("target", EXPECTED)
def test_golden(target: str, shipped_query) -> None:
    assert shipped_query(target) == EXPECTED[target]


# The rule's own conditions on Sumo's records: every raw path read from fields['message.<path>']
SUMO_RULE = (
    "AND fields['message.verb']=\"create\" "
    "AND fields['message.objectRef.resource']=\"serviceaccounts\" "
    "AND fields['message.objectRef.subresource']=\"token\" "
    'AND (fields[\'message.stage\'] in ("ResponseComplete", "Panic") '
    "OR isEmpty(fields['message.stage'])) "
    "AND !(fields['message.user.username'] matches /system:node:.*/ "
    "OR fields['message.user.username']=\"system:kube-controller-manager\")"
)
SUMO_EXPRESSIONS = {
    # Sumo's own Kubernetes rules select vendor and product Kubernetes
    # (SumoLogic/cloud-siem-content-catalog audit/rules.json)
    "sumologic-cse": f'metadata_vendor="Kubernetes" AND metadata_product="Kubernetes" {SUMO_RULE}',
    # and its EKS rules cloud_provider AWS and cloud_service EKS; here with the eks filter
    "sumologic-cse-eks": (
        f'cloud_provider="AWS" AND cloud_service="EKS" {SUMO_RULE} '
        "AND !fields['message.user.username'] matches /eks:.*/"
    ),
}


@pytest.mark.parametrize("target", SUMO_EXPRESSIONS)
def test_sumologic_cse_rule_document(target: str, shipped_query, token_rule) -> None:
    """A rule import document that Cloud SIEM reads: valid JSON, one rule, the rule's name
    and ATT&CK tags, and the reviewed expression."""
    (rule,) = json.loads(shipped_query(target))["rules"]
    assert rule["name"] == token_rule.title
    assert "_mitreAttackTechnique:T1528" in rule["tags"]
    assert rule["expression"] == SUMO_EXPRESSIONS[target]
