"""Installed as sigma.backends.k8s_audit_detect: pySigma's plugin discovery registers this
project's CloudWatch Logs Insights backend as `sigma convert -t cloudwatch_insights`."""

from k8s_audit_detect.cloudwatch import CloudWatchLogsInsightsBackend

__all__ = ["CloudWatchLogsInsightsBackend"]
