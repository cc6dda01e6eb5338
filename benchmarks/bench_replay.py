"""`convert.py replay` on a generated audit log, side by side with two references.

    .venv/bin/python benchmarks/bench_replay.py [--events 1000000] [--dir bench-data]

Replay runs every rule, the correlation rules included (their base rules' events read once
more, over all files); the references run the TokenRequest rule's condition only.
(a) a plain Python loop: the standard json module, the same condition in Python;
(b) DuckDB running a hand-written query with an explicit column list over the same file that
does replay's job (each alert as a JSON line with the same triage fields); (b1), the same
condition only counted, is shown beside it.
Each runs in its own process; events/s from wall time, peak memory from ru_maxrss.
Bounds (foundation issue): replay >= 4x (a), <= 1.5x the time of (b), and memory flat in the
file size (compared on a file a quarter the size).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

USERS = [
    "system:node:ip-10-0-1-23.ec2.internal",
    "system:kube-controller-manager",
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "alice@example.com",
]
REQUESTS = [
    ("serviceaccounts", "token", "create"),
    ("pods", None, "get"),
    ("configmaps", None, "list"),
    ("leases", None, "update"),
    ("serviceaccounts", None, "create"),
]


def generate(path: Path, events: int) -> None:
    """Audit events of about 2 KB, as EKS writes them (user.extra, request body, annotations)."""
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as out:
        for n in range(events):
            resource_, subresource, verb = rng.choice(REQUESTS)
            ref = {"resource": resource_, "namespace": "kube-system", "name": f"sa-{n % 97}"}
            if subresource:
                ref["subresource"] = subresource
            event = {
                "kind": "Event",
                "apiVersion": "audit.k8s.io/v1",
                "level": "Request",
                "auditID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "stage": rng.choice(["ResponseComplete", "ResponseComplete", "RequestReceived"]),
                "requestURI": f"/api/v1/namespaces/kube-system/{resource_}/sa-{n % 97}",
                "verb": verb,
                "user": {
                    "username": rng.choice(USERS),
                    "uid": "aws-iam-authenticator:123456789012:AROAEXAMPLEEXAMPLE",
                    "groups": ["system:bootstrappers", "system:nodes", "system:authenticated"],
                    "extra": {
                        "accessKeyId": ["ASIAEXAMPLEEXAMPLE"],
                        "arn": ["arn:aws:sts::123456789012:assumed-role/eks-node/i-0abc"],
                        "canonicalArn": ["arn:aws:iam::123456789012:role/eks-node"],
                        "principalId": ["AROAEXAMPLEEXAMPLE"],
                        "sessionName": [f"i-0{n % 1000:03d}abcdef"],
                    },
                },
                "sourceIPs": [f"10.0.{n % 250}.{n % 200}"],
                "userAgent": "kubelet/v1.30.2 (linux/amd64) kubernetes/3ba4b9d",
                "objectRef": ref | {"apiVersion": "v1"},
                "responseStatus": {"metadata": {}, "code": 201},
                "requestObject": {
                    "kind": "TokenRequest",
                    "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": None},
                    "spec": {
                        "audiences": ["https://kubernetes.default.svc"],
                        "expirationSeconds": 3607,
                        "boundObjectRef": {
                            "kind": "Pod",
                            "apiVersion": "v1",
                            "name": f"coredns-5d78c9869d-{n % 10000:05d}",
                            "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        },
                    },
                    "status": {"token": "", "expirationTimestamp": None},
                },
                "requestReceivedTimestamp": "2026-11-20T09:14:03.120000Z",
                "stageTimestamp": "2026-11-20T09:14:03.131000Z",
                "annotations": {
                    "authorization.k8s.io/decision": "allow",
                    "authorization.k8s.io/reason": 'RBAC: allowed by RoleBinding "system:node"',
                    "authentication.kubernetes.io/issued-credential-id": f"JTI={uuid.uuid4()}",
                    "pod-security.kubernetes.io/enforce-policy": "privileged:latest",
                },
            }
            out.write(json.dumps(event) + "\n")


PYTHON_LOOP = """
import json, sys
alerts = 0
with open(sys.argv[1], encoding="utf-8") as lines:
    for line in lines:
        e = json.loads(line)
        ref = e.get("objectRef") or {}
        user = (e.get("user") or {}).get("username") or ""
        if (e.get("verb") == "create" and ref.get("resource") == "serviceaccounts"
                and ref.get("subresource") == "token"
                and e.get("stage") in ("ResponseComplete", "Panic", None)
                and not user.startswith("system:node:")
                and user != "system:kube-controller-manager"):
            alerts += 1
print(alerts)
"""

DUCKDB_CONDITION = """
  WHERE verb = 'create' AND objectRef.resource = 'serviceaccounts'
    AND objectRef.subresource = 'token'
    AND (stage IN ('ResponseComplete', 'Panic') OR stage IS NULL)
    AND NOT coalesce("user".username LIKE 'system:node:%'
                     OR "user".username = 'system:kube-controller-manager', false)
"""

# (b1) counts the alerts: the least a query can do.
DUCKDB_COUNT = (
    """
import duckdb, sys
duckdb.execute("SET enable_progress_bar = false")
print(duckdb.sql('''
  SELECT count(*) FROM read_json(?, format = 'newline_delimited', columns = {
    verb: 'VARCHAR', stage: 'VARCHAR',
    objectRef: 'STRUCT(resource VARCHAR, subresource VARCHAR)',
    "user": 'STRUCT(username VARCHAR)'})
"""
    + DUCKDB_CONDITION
    + """''', params=[sys.argv[1]]).fetchall()[0][0])
"""
)

# (b) does replay's job by hand: each alert as a JSON line with the rule's triage fields.
DUCKDB_ALERTS = (
    """
import duckdb, sys
duckdb.execute("SET enable_progress_bar = false")
rows = duckdb.execute('''
  SELECT to_json(struct_pack(auditID, stage, requestReceivedTimestamp, verb, userAgent,
                 sourceIPs, "user", impersonatedUser, objectRef, responseStatus, annotations))
  FROM read_json(?, format = 'newline_delimited', columns = {
    verb: 'VARCHAR', stage: 'VARCHAR', auditID: 'VARCHAR', requestReceivedTimestamp: 'VARCHAR',
    userAgent: 'VARCHAR', sourceIPs: 'VARCHAR[]',
    "user": 'STRUCT(username VARCHAR, groups VARCHAR[])',
    impersonatedUser: 'STRUCT(username VARCHAR)',
    objectRef: 'STRUCT(resource VARCHAR, subresource VARCHAR, namespace VARCHAR, name VARCHAR)',
    responseStatus: 'STRUCT(code BIGINT)',
    annotations: 'STRUCT("authorization.k8s.io/decision" VARCHAR)'})
"""
    + DUCKDB_CONDITION
    + """''', [sys.argv[1]])
while batch := rows.fetchmany(2048):
    sys.stdout.write("".join(line + "\\n" for (line,) in batch))
"""
)


def measure(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB (of this child alone, from wait4), and its stdout."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if child.returncode:
            raise SystemExit(f"{command[:3]} failed with exit {child.returncode}")
        out.seek(0)
        return seconds, usage.ru_maxrss / 1024, out.read().decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench-data")
    args = parser.parse_args()
    args.dir.mkdir(exist_ok=True)
    small, big = (
        args.dir / f"audit-{args.events // 4}.jsonl",
        args.dir / f"audit-{args.events}.jsonl",
    )
    for path, count in ((small, args.events // 4), (big, args.events)):
        if not path.exists():
            generate(path, count)
    print(f"file: {big.stat().st_size / args.events:.0f} bytes/event, {args.events} events")

    py = sys.executable
    replay_small = measure([py, "convert.py", "replay", str(small)])
    replay = measure([py, "convert.py", "replay", str(big)])
    counted = measure([py, "-c", DUCKDB_COUNT, str(big)])
    handwritten = measure([py, "-c", DUCKDB_ALERTS, str(big)])
    loop = measure([py, "-c", PYTHON_LOOP, str(big)])
    lines = [json.loads(line) for line in replay[2].splitlines()]
    # the TokenRequest rule's alerts (the correlation rules' alert per group come on top)
    alerts = sum(1 for line in lines if "correlation" not in line)
    groups = len(lines) - alerts
    counts = (alerts, int(counted[2]), len(handwritten[2].splitlines()), int(loop[2]))
    assert len(set(counts)) == 1, counts

    for name, (seconds, mib, _) in (
        ("replay", replay),
        ("(b) DuckDB, alert lines", handwritten),
        ("(b1) DuckDB, count only", counted),
        ("(a) Python json loop", loop),
    ):
        rate = args.events / seconds
        print(f"{name:25} {seconds:7.2f} s  {rate:>10,.0f} events/s  {mib:7.0f} MiB")
    print(f"alerts: {alerts} (all four agree); replay's correlation alerts: {groups}")
    print(f"replay vs (a): {loop[0] / replay[0]:.1f}x faster (bound >= 4x)")
    print(f"replay vs (b): {replay[0] / handwritten[0]:.2f}x the time (bound <= 1.5x)")
    print(f"replay vs (b1): {replay[0] / counted[0]:.2f}x the time (count only, for reference)")
    print(
        f"replay peak memory: {replay_small[1]:.0f} MiB at {args.events // 4} events, "
        f"{replay[1]:.0f} MiB at {args.events} (ratio {replay[1] / replay_small[1]:.2f})"
    )


if __name__ == "__main__":
    main()
