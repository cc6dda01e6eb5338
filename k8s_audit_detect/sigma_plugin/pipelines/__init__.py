"""Installed as sigma.pipelines.k8s_audit_detect: pySigma's plugin discovery registers each
target's pipeline chain under k8s_audit_<target> (k8s_audit_detect/plugin.py)."""

from k8s_audit_detect.plugin import pipelines

# Without __all__, pySigma would register every public name here as a pipeline.
__all__ = ["pipelines"]
