"""convert.py's whole run (every target) against one `sigma convert` call, side by side.

    .venv/bin/python benchmarks/bench_convert.py [--rounds 5]

Bound (foundation issue): the whole run within 1.5x of a single `sigma convert`.
Both are timed as fresh processes, interleaved, and compared by their medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULE = "sigma/rules/credential_access_kubernetes_serviceaccount_token_requested.yml"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    # sigma-cli with this project's pipeline types registered, as tests/test_pipelines.py runs it
    sigma = [sys.executable, "-m", "k8s_audit_detect.sigma_cli"]
    from convert import TARGETS
    from k8s_audit_detect.cloudwatch import CloudWatchLogsInsightsBackend

    # sigma-cli knows only pySigma's plugins, not this project's own CloudWatch backend
    cli_targets = [t for t in TARGETS if t.backend != CloudWatchLogsInsightsBackend.identifier]
    ours, theirs = [], {t.name: [] for t in cli_targets}
    for _ in range(args.rounds):
        ours.append(timed([sys.executable, "convert.py", "--stdout"]))
        for t in cli_targets:
            pipelines = [arg for name in t.pipelines for arg in ("-p", f"pipelines/{name}")]
            options = [arg for key, value in t.backend_options for arg in ("-O", f"{key}={value}")]
            command = [*sigma, "convert", "-t", t.backend, *pipelines, *options, RULE]
            theirs[t.name].append(timed(command))
    mine = statistics.median(ours)
    files = sum(len(t.variants()) for t in TARGETS)
    print(
        f"convert.py, all {len(TARGETS)} targets, {files} query files (every environment): "
        f"{mine:.3f} s (median of {args.rounds})"
    )
    for name, times in theirs.items():
        single = statistics.median(times)
        print(f"sigma convert, {name:15} {single:.3f} s   ratio {mine / single:.2f}x")
    worst = max(mine / statistics.median(t) for t in theirs.values())
    print(f"worst ratio {worst:.2f}x (bound 1.5x): {'OK' if worst <= 1.5 else 'OVER'}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
