"""Pipelines are usable on their own: `sigma convert -t <backend> -p pipelines/<file>` gives
the same query as convert.py, and a field a pipeline does not map fails conversion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from convert import TARGETS
from k8s_audit_detect.cloudwatch import CloudWatchLogsInsightsBackend
from k8s_audit_detect.rules import rule_files

ROOT = Path(__file__).resolve().parent.parent
# sigma-cli, with this project's pipeline types registered (k8s_audit_detect/sigma_cli.py)
SIGMA_CLI = (sys.executable, "-m", "k8s_audit_detect.sigma_cli")
RULE = "sigma/rules/credential_access_kubernetes_serviceaccount_token_requested.yml"


# Targets whose backend is a pySigma plugin (not this project's own k8s_audit_detect/ backends).
SIGMA_CLI_TARGETS = [t for t in TARGETS if t.backend != CloudWatchLogsInsightsBackend.identifier]


@pytest.mark.parametrize("target", SIGMA_CLI_TARGETS, ids=[t.name for t in SIGMA_CLI_TARGETS])
def test_sigma_cli_gives_the_same_query(target, shipped_query) -> None:
    """The shipped rule with the environment's filters (no organisation filter: the shipped
    query, whatever filters a fork adds)."""
    pipelines = [arg for name in target.pipelines for arg in ("-p", f"pipelines/{name}")]
    options = [arg for key, value in target.backend_options for arg in ("-O", f"{key}={value}")]
    (variant,) = target.variants()[:1]  # a platform-tied target: its environment's filters
    filters = [
        arg
        for env in variant
        for path in rule_files(ROOT / "sigma" / "filters" / env)
        for arg in ("--filter", str(path.relative_to(ROOT)))
    ]
    result = subprocess.run(
        [*SIGMA_CLI, "convert", "-t", target.backend, *pipelines, *options, *filters, RULE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == shipped_query(target.name)


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_a_field_outside_the_audit_event_fails_conversion(target, tmp_path) -> None:
    """A name no audit Event has (here a pod's own spec.nodeName, not requestObject's) fails
    in one line naming the field, the target and why, instead of a query matching nothing."""
    from sigma.collection import SigmaCollection

    from convert import convert_target
    from k8s_audit_detect import UserError

    rule = (
        (ROOT / RULE)
        .read_text(encoding="utf-8")
        .replace("    verb: create\n", "    verb: create\n    spec.nodeName: evil\n")
    )
    path = tmp_path / "rule_with_unmapped_field.yml"
    path.write_text(rule, encoding="utf-8")
    collection = SigmaCollection.load_ruleset([path])
    with pytest.raises(UserError) as raised:
        convert_target(target, collection)
    message = str(raised.value)
    assert f"target {target.name}: field spec.nodeName: not a field of the Kubernetes audit" in (
        message
    )
    assert "\n" not in message


ELASTIC_KUBERNETES_TARGETS = [t for t in TARGETS if "elastic_kubernetes.yml" in t.pipelines]


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("user.groups", "`text`"),  # fields.yml: analysed, never exact
        ("annotations.authorization.k8s.io/reason", "`text`"),
        ("annotations.authentication.kubernetes.io/issued-credential-id", "does not index"),
        ("requestObject.spec.expirationSeconds", "does not index"),  # dynamic: false
    ],
)
@pytest.mark.parametrize("target", ELASTIC_KUBERNETES_TARGETS, ids=lambda t: t.name)
def test_elastic_refuses_what_its_kubernetes_integration_cannot_match_exactly(
    target, field: str, reason: str, tmp_path
) -> None:
    from sigma.collection import SigmaCollection

    from convert import convert_target
    from k8s_audit_detect import UserError

    rule = (
        (ROOT / RULE)
        .read_text(encoding="utf-8")
        .replace("    verb: create\n", f"    verb: create\n    {field}: x\n")
    )
    path = tmp_path / "rule_on_a_field_elastic_cannot_match.yml"
    path.write_text(rule, encoding="utf-8")
    with pytest.raises(UserError) as raised:
        convert_target(target, SigmaCollection.load_ruleset([path]))
    message = str(raised.value)
    assert reason in message and target.name in message and "\n" not in message


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_every_target_pipeline_cites_its_vendor_source(target) -> None:
    """The pipelines that map the fields say where the mapping comes from, as --list does:
    each repository or page --list names is cited in them."""
    text = "".join((ROOT / "pipelines" / name).read_text() for name in target.pipelines)
    head = target.source.split(" (")[0]
    cited = [word.rstrip(",;") for word in head.split() if "/" in word or "-" in word]
    assert cited, target.source
    missing = [word for word in cited if word not in text]
    assert not missing, f"{target.pipelines} do not cite {missing}"


@pytest.mark.parametrize(
    ("logsource", "converts"),
    [
        ("  product: kubernetes\n  service: audit\n", True),
        ("  category: application\n  product: kubernetes\n  service: audit\n", True),  # SigmaHQ's
        ("  product: kubernetes\n", False),
        ("  product: windows\n  service: security\n", False),
    ],
    ids=["kubernetes-audit", "application-kubernetes-audit", "no-service", "windows"],
)
@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_logsources(target, logsource: str, converts: bool, tmp_path) -> None:
    """Kubernetes audit rules, with or without SigmaHQ's category application, convert on every
    target; other logsources are refused in one line that says what to write."""
    from sigma.collection import SigmaCollection

    from convert import convert_target
    from k8s_audit_detect import UserError

    text = (ROOT / RULE).read_text(encoding="utf-8")
    text = text.replace("  product: kubernetes\n  service: audit\n", logsource)
    path = tmp_path / "rule_with_logsource.yml"
    path.write_text(text, encoding="utf-8")
    collection = SigmaCollection.load_ruleset([path])
    if converts:
        assert convert_target(target, collection)
        return
    with pytest.raises(UserError) as raised:
        convert_target(target, collection)
    message = str(raised.value)
    assert "product: kubernetes, service: audit" in message and "\n" not in message


def test_other_logsource_categories_are_refused_in_one_line(repo: Path) -> None:
    from conftest import one_error_line, run

    rule = repo / RULE
    rule.write_text(
        rule.read_text().replace("logsource:\n", "logsource:\n  category: process_creation\n")
    )
    line = one_error_line(run(repo))
    assert RULE in line and "category 'process_creation'" in line
