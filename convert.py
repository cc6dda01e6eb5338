#!/usr/bin/env python3
"""Convert the Sigma rules under sigma/rules/ into every target's query, and replay audit logs.

    python convert.py                    write queries/<target>/<rule>.<ext> for every target
    python convert.py --check            compare with the committed queries/, exit 1 on a diff
    python convert.py -t splunk --stdout print one target's files
    python convert.py --list             the targets: platform, data source, verifying engine
    python convert.py replay FILE...     run the rules over Kubernetes audit log files (DuckDB)

The code is the package k8s_audit_detect (k8s_audit_detect/cli.py); installed with
`pip install .`, the same command line is `k8s-audit-detect`. This script works on the
repository it sits in, wherever it is run from.
"""

import sys
from pathlib import Path

from k8s_audit_detect.cli import *  # noqa: F403  (what tests and scripts import from convert)
from k8s_audit_detect.cli import main
from k8s_audit_detect.paths import FILTERS_DIR, QUERIES_DIR, ROOT, RULES_DIR  # noqa: F401

if __name__ == "__main__":
    sys.exit(main(root=Path(__file__).resolve().parent))
