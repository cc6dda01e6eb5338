from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

RULE_STEM = "credential_access_kubernetes_serviceaccount_token_requested"


@pytest.fixture(scope="session")
def token_rule() -> Any:
    """The TokenRequest rule, as convert.py loads it."""
    from convert import load_rules, rule_stem, sigma_rules

    (rule,) = [r for r in sigma_rules(load_rules()) if rule_stem(r) == RULE_STEM]
    return rule


@pytest.fixture(scope="session")
def generated() -> dict[Path, str]:
    """Every query file as convert.py generates it now (not as committed)."""
    from convert import TARGETS, render

    return render(TARGETS)


@pytest.fixture(scope="session")
def query_for(generated: dict[Path, str]):
    from convert import QUERIES_DIR, TARGETS_BY_NAME

    def query(target: str, variant: tuple[str, ...] | None = None, stem: str = RULE_STEM) -> str:
        """The target's query for these environments; by default its first variant (the
        rule alone, or a platform-tied target's own environment)."""
        t = TARGETS_BY_NAME[target]
        variant = t.variants()[0] if variant is None else variant
        path = QUERIES_DIR / t.name / "+".join(variant) / f"{stem}.{t.extension}"
        return generated[path].rstrip("\n")

    return query
