"""This project's pipelines as a pySigma plugin: one name per target for its whole pipeline
chain (as TARGETS composes it), so that a sigma-cli user who installed the package runs
`sigma convert -t <backend> -p k8s_audit_<target> rules/` and gets the target's query.

pySigma finds them through the packages sigma.pipelines.k8s_audit_detect and
sigma.backends.k8s_audit_detect (k8s_audit_detect/sigma_plugin/, installed under those names
by pyproject.toml). Nothing is read at import: a pipeline's YAML is parsed when it is used;
importing it registers this project's pipeline types (below).
"""

from __future__ import annotations

from collections.abc import Callable

# Imported here, not only for type checking: pySigma's discovery evaluates each factory's
# return annotation (typing.get_type_hints), and a name it cannot resolve breaks every
# sigma-cli command.
from sigma.processing.pipeline import ProcessingPipeline

# The YAML pipelines name this project's own pySigma types (k8s_audit_detect/pipeline_types.py:
# gke_method_name, sigma_regex_whole_value, field_name_regex, keyed_prefix_mapping, value_type):
# importing the module
# registers them in pySigma's registries, for the chains below and for `-p <file>.yml` alike.
import k8s_audit_detect.pipeline_types  # noqa: F401
from k8s_audit_detect import paths
from k8s_audit_detect.targets import TARGETS, Target

PRIORITY = 20  # pySigma's convention for field mappings; the chain keeps its own order


def chain(target: Target) -> ProcessingPipeline:
    """The target's pipelines from the installed package, composed in order as convert.py
    composes them, allowed only for the target's backend."""
    folder = paths.bundled_pipelines_dir()
    pipeline = sum(
        (
            ProcessingPipeline.from_yaml((folder / name).read_text(encoding="utf-8"))
            for name in target.pipelines
        ),
        ProcessingPipeline(),
    )
    # `+` keeps no name, priority or allowed backends: set them on the sum
    pipeline.name = f"Kubernetes audit, {target.name}: {target.platform}"
    pipeline.priority = PRIORITY
    pipeline.allowed_backends = frozenset({target.backend})
    return pipeline


def _factory(target: Target) -> Callable[[], ProcessingPipeline]:
    # a plain function: pySigma registers functions (not partials) from a plugin's dict
    def pipeline() -> ProcessingPipeline:
        return chain(target)

    return pipeline


pipelines: dict[str, Callable[[], ProcessingPipeline]] = {
    target.sigma_cli_pipeline: _factory(target) for target in TARGETS
}
