"""`convert.py replay` on a generated audit log, side by side with a hand-written DuckDB query.

    .venv/bin/python benchmarks/bench_replay.py [--events 1000000] [--rounds 3] [--dir bench-data]

Runs, each in its own process, interleaved over --rounds rounds (medians reported; wall and
CPU time and peak memory from wait4):
- replay: `convert.py replay FILE`, the repository's shipped rules (sigma/rules/: the
  TokenRequest rule and the correlation rules, whose base rules' events it keeps);
- replay, every rule: the same in a project that also holds the test rules (tests/rules/),
  still one read;
- each of those on a copy of the file with one malformed line in the middle;
- replay on an empty file: its start-up, the rules taken from its conversion cache as in every
  run after the first (the benchmark warms it, in a folder of its own under --dir); and its
  first run's, pySigma loading and converting the rules;
- replay from a pipe (`cat FILE | convert.py replay -`) and of the file gzipped: the stream
  path, in blocks;
- (b) one hand-written DuckDB query with an explicit column list that does replay's job for
  the TokenRequest rule (each alert as a JSON line with its triage fields); (bL) the same with
  each alert's line number, as replay gives it (WITH ORDINALITY); (b1) the same condition,
  only counted; (b*) one query with every plain rule's condition OR-ed; (bC) one query that
  does the whole job of replay with every rule: every rule's alerts and every correlation's
  groups, the file read once (the bound's reference); (bCL) (bC) with line numbers, as (bL);
  (bCI) (bC) reading with `ignore_errors`, as replay does, so that a bad line costs only itself
  (without it, DuckDB stops the query at the first one);
- on request: every rule and correlation with one read of the file each (--separate), and
  (a) a Python loop (--python-loop).
Bounds (issue 10): replay with every rule <= 1.3x the time of a hand-written query doing the
same job, (bC); with one malformed line <= 2x the clean run and the same peak memory (+-20%).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

USERS = [
    "system:node:ip-10-0-1-23.ec2.internal",
    "system:kube-controller-manager",
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "alice@example.com",
    "system:serviceaccount:kube-system:coredns",
]
# Service accounts' requests carry their token's id (Kubernetes 1.30 and later: user.extra
# authentication.kubernetes.io/credential-id, JTI=<uuid>), one token an hour per account; a
# pod's token also names its pod and node. What the correlations' base rules keep.
# A service account's requests come from where it runs: the pod's address, the control plane's.
ADDRESSES = {
    "system:serviceaccount:kube-system:coredns": "10.0.1.57",
    "system:serviceaccount:kube-system:generic-garbage-collector": "10.0.0.10",
}
POD_BOUND = {
    "system:serviceaccount:kube-system:coredns": ("coredns-5d78c9869d-x7k2p", "ip-10-0-1-23")
}
REQUESTS = [
    ("serviceaccounts", "token", "create"),
    ("pods", None, "get"),
    ("configmaps", None, "list"),
    ("leases", None, "update"),
    ("serviceaccounts", None, "create"),
]
TOKEN_RULE = b'{"rule_id": "6f2b7a6e-3d1c-4c8e-9b7a-2e4f5d8c1a90"'  # the shipped rule's alerts
START = datetime.datetime(2026, 11, 20, 0, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
STAGE = datetime.timedelta(milliseconds=11)
TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
MALFORMED = '{"kind": "Event", "verb": "create", "objectRef": {"resource": "serviceacc'


def generate(path: Path, events: int) -> None:
    """Audit events of about 2 KB, as EKS writes them (user.extra, request body, annotations),
    in time order over one day (events: 11.6 a second for 1,000,000), as an API server's log
    file holds them; each a few milliseconds after the one before, at random."""
    rng = random.Random(7)
    step = DAY / events
    received = START
    with path.open("w", encoding="utf-8") as out:
        for n in range(events):
            received += step * rng.uniform(0.5, 1.5)
            resource_, subresource, verb = rng.choice(REQUESTS)
            user = rng.choice(USERS)
            extra: dict[str, list[str]] = {
                "accessKeyId": ["ASIAEXAMPLEEXAMPLE"],
                "arn": ["arn:aws:sts::123456789012:assumed-role/eks-node/i-0abc"],
                "canonicalArn": ["arn:aws:iam::123456789012:role/eks-node"],
                "principalId": ["AROAEXAMPLEEXAMPLE"],
                "sessionName": [f"i-0{n % 1000:03d}abcdef"],
            }
            if user.startswith("system:serviceaccount:"):
                token = uuid.uuid5(uuid.NAMESPACE_URL, f"{user}/{received:%Y%m%d%H}")
                extra = {"authentication.kubernetes.io/credential-id": [f"JTI={token}"]}
                if user in POD_BOUND:
                    pod, node = POD_BOUND[user]
                    extra["authentication.kubernetes.io/pod-name"] = [pod]
                    extra["authentication.kubernetes.io/node-name"] = [node]
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
                    "username": user,
                    "uid": "aws-iam-authenticator:123456789012:AROAEXAMPLEEXAMPLE",
                    "groups": ["system:bootstrappers", "system:nodes", "system:authenticated"],
                    "extra": extra,
                },
                "sourceIPs": [ADDRESSES.get(user, f"10.0.{n % 250}.{n % 200}")],
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
                "requestReceivedTimestamp": received.strftime(TIME),
                "stageTimestamp": (received + STAGE).strftime(TIME),
                "annotations": {
                    "authorization.k8s.io/decision": "allow",
                    "authorization.k8s.io/reason": 'RBAC: allowed by RoleBinding "system:node"',
                    "authentication.kubernetes.io/issued-credential-id": f"JTI={uuid.uuid4()}",
                    "pod-security.kubernetes.io/enforce-policy": "privileged:latest",
                },
            }
            out.write(json.dumps(event) + "\n")


def with_one_malformed_line(source: Path, target: Path) -> None:
    """A copy of source whose middle line is cut short."""
    with source.open("rb") as lines:
        total = sum(1 for _ in lines)
    with source.open("rb") as lines, target.open("wb") as out:
        for n, line in enumerate(lines):
            out.write(MALFORMED.encode() + b"\n" if n == total // 2 else line)


def every_rule_project(folder: Path) -> Path:
    """A project with every rule in the repository, as a user's project holds its rules: the
    shipped rules and filters (sigma/) and the test rules (tests/rules/*.yml) in
    sigma/rules/tests/; its pipelines are the package's own."""
    project = folder / "every-rule-project"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(ROOT / "sigma", project / "sigma")
    (project / "sigma" / "rules" / "tests").mkdir()
    for rule in sorted((ROOT / "tests" / "rules").glob("*.yml")):
        shutil.copy(rule, project / "sigma" / "rules" / "tests" / rule.name)
    return project


# Replay with every rule: `convert.py replay FILE` in that project (argv: the project, then the
# files), as a user runs it: the first input's line scan starts before the rules load
# (Prescan), the rules come from the conversion cache, then one pass.
EVERY_RULE = """
import sys
from pathlib import Path
from k8s_audit_detect.cli import main

sys.exit(main(["replay", *sys.argv[2:]], root=Path(sys.argv[1])))
"""

# Replay's start-up when it converts the rules: its first run, or one after a rule changed
# (an empty cache of its own; argv: the files).
CONVERTING = """
import os, sys, tempfile
from k8s_audit_detect.cli import main

with tempfile.TemporaryDirectory() as cache:
    os.environ["XDG_CACHE_HOME"] = cache
    code = main(["replay", *sys.argv[1:]])
sys.exit(code)
"""

# Every rule of that project as replay runs them (argv: the project, then as each script says).
RULES = """
import sys
from pathlib import Path
from k8s_audit_detect import paths
from k8s_audit_detect.cli import replay_plan
from k8s_audit_detect.replay import run_replay

paths.use(Path(sys.argv.pop(1)))
plan = replay_plan([])
"""

# Every rule and correlation, one read of the file each: what replay did before issue 10.
ONE_RULE_EACH = (
    RULES
    + """
import io
for rule in plan.rules:
    run_replay(sys.argv[1:], [rule], sys.stdout, io.StringIO())
for correlation in plan.correlations:
    run_replay(
        sys.argv[1:], [], sys.stdout, io.StringIO(), "json", [correlation], plan.bases
    )
"""
)

# (b*) one DuckDB query with every rule's condition (the duckdb target's WHERE clauses, OR-ed)
# over a view of the same columns replay reads, alerts as JSON lines without file, line or rule:
# the SQL is written beforehand (by this script) to a file, and the run is that query alone.
EVERY_RULE_SQL = (
    RULES
    + """
import duckdb
from k8s_audit_detect import replay
rules = replay.compile_rules(plan.rules, duckdb.connect())


def reading(fields, numbered=False, robust=False):  # the events, named as replay names them
    columns = replay.json_columns(fields)
    read = ", ".join(f"'{n}': '{t}'" for n, t in columns.items())
    view = ", ".join(f'{replay.column_expression(f, columns)} AS "{f}"' for f in fields)
    line = "ordinality AS line, " if numbered else ""
    skip = "ignore_errors = true, " if robust else ""
    return (
        f"SELECT {line}{view} FROM read_json('{sys.argv[1]}', format = 'newline_delimited', "
        f"{skip}columns = {{{read}}})" + (" WITH ORDINALITY" if numbered else "")
    )


fields = list(dict.fromkeys(f for rule in rules for f in rule.fields))
where = " OR ".join(f"({rule.condition})" for rule in rules)
Path(sys.argv[2]).write_text(
    f"SELECT to_json(k8s_audit) FROM ({reading(fields)}) AS k8s_audit WHERE {where}"
)
# (bC) the whole job of replay with every rule: each rule's alerts and each correlation's
# groups, the file read once into a materialized CTE of the events any rule or base rule
# matches (named as the view the correlation queries read); (bCL) the same with each rule
# alert's line, numbered as (bL) numbers them
# the correlations as the duckdb target writes them, each testing its base rules' conditions
# (replay's own read the marks its single pass sets on those rules' events)
from k8s_audit_detect.cli import REPLAY_TARGET, convert_target, load_rules
from k8s_audit_detect.correlations import correlation_rules
from k8s_audit_detect.rules import rule_stem
collection = load_rules([])
queries = convert_target(REPLAY_TARGET, collection)
originals = [queries[rule_stem(rule)] for rule in correlation_rules(collection)]
base = [b.condition for b in replay.compile_rules(plan.bases, duckdb.connect())]
read = [f for r in [*plan.bases, *plan.correlations] for f in r.fields]
fields = list(dict.fromkeys([*fields, *read]))
where = " OR ".join(f"({condition})" for condition in [*(r.condition for r in rules), *base])
correlations = [f"SELECT to_json(alert) FROM ({query}) AS alert" for query in originals]
for numbered, robust, path in ((False, False, sys.argv[3]), (True, False, sys.argv[4]),
                               (False, True, sys.argv[5])):
    line = "line := line, " if numbered else ""
    alerts = [
        f"SELECT to_json(struct_pack({line}"
        + ", ".join(f'"{f}" := "{f}"' for f in rule.fields)
        + f")) FROM k8s_audit WHERE {rule.condition}"
        for rule in rules
    ]
    Path(path).write_text(
        f"WITH k8s_audit AS MATERIALIZED (SELECT * FROM ({reading(fields, numbered, robust)}) "
        f"WHERE {where})\\n" + "\\nUNION ALL\\n".join(alerts + correlations)
    )
"""
)

RUN_SQL_FILE = """
import duckdb, sys
duckdb.execute("SET enable_progress_bar = false")
rows = duckdb.execute(open(sys.argv[1]).read())
while batch := rows.fetchmany(2048):
    sys.stdout.write("".join(line + "\\n" for (line,) in batch))
"""

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

# (bL) the same, each alert with its line, as replay's alerts carry it: WITH ORDINALITY numbers
# the records (the line, in a file without blank lines, which DuckDB skips).
DUCKDB_ALERTS_LINES = DUCKDB_ALERTS.replace(
    "to_json(struct_pack(auditID,", "to_json(struct_pack(line := ordinality, auditID,"
).replace("VARCHAR)'})\n", "VARCHAR)'}) WITH ORDINALITY\n")
assert DUCKDB_ALERTS_LINES.lower().count("ordinality") == 2, "(bL) is (b) with line numbers"


@dataclass
class Run:
    seconds: float  # wall
    cpu: float  # user + system, all threads
    mib: float  # peak resident memory
    lines: int  # lines on stdout
    first: str  # its first line
    token: int  # of which alerts of the shipped TokenRequest rule
    stderr: str


def child_environment() -> dict[str, str]:
    """The runs' environment: Python's default, which caches modules' bytecode (a
    PYTHONDONTWRITEBYTECODE set where the benchmark runs would have replay compile its own
    modules from source in every run, about 35 ms that no installed copy spends)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(command: list[str]) -> Run:
    """One run in a fresh process, its output counted as it is written to a file: the
    benchmark keeps no output in memory, since a child's peak RSS (wait4's ru_maxrss) starts
    at the parent's size when it is forked."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, env=child_environment())
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode()
        if code not in (0, 1):
            raise SystemExit(f"{command[:4]} failed with exit {code}: {stderr[-2000:]}")
        out.seek(0)
        first, lines, token = out.readline().decode(), 0, 0
        out.seek(0)
        for line in out:
            lines += 1
            token += line.startswith(TOKEN_RULE)
        cpu = usage.ru_utime + usage.ru_stime
        return Run(seconds, cpu, usage.ru_maxrss / 1024, lines, first, token, stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench-data")
    parser.add_argument("--python-loop", action="store_true", help="also run (a), slow")
    parser.add_argument(
        "--separate", action="store_true", help="also every rule, one read of the file each"
    )
    args = parser.parse_args()
    args.dir.mkdir(exist_ok=True)
    # v4: over one day, service accounts' token ids and addresses (a file an older generate()
    # wrote is not used)
    clean = args.dir / f"audit-{args.events}-v4.jsonl"
    broken = args.dir / f"audit-{args.events}-v4-one-malformed.jsonl"
    empty = args.dir / "empty.jsonl"
    if not clean.exists():
        generate(clean, args.events)
    if not broken.exists():
        with_one_malformed_line(clean, broken)
    packed = clean.with_name(clean.name + ".gz")
    if not packed.exists():
        with clean.open("rb") as source, gzip.open(packed, "wb", compresslevel=1) as out:
            shutil.copyfileobj(source, out, 1 << 20)
    empty.write_text("")
    print(f"file: {clean.stat().st_size / args.events:,.0f} bytes/event, {args.events:,} events")

    py = sys.executable
    project = str(every_rule_project(args.dir))
    # replay's conversion cache: the benchmark's own (its runs leave the user's alone)
    os.environ["XDG_CACHE_HOME"] = str(args.dir / "cache")
    runs = {
        "replay": [py, "convert.py", "replay", str(clean)],
        "replay, every rule": [py, "-c", EVERY_RULE, project, str(clean)],
        "replay, one malformed line": [py, "convert.py", "replay", str(broken)],
        "replay, every rule, one malformed line": [py, "-c", EVERY_RULE, project, str(broken)],
        "replay, empty file (start-up)": [py, "convert.py", "replay", str(empty)],
        "replay, empty file, rules converted (first run)": [py, "-c", CONVERTING, str(empty)],
        "replay from a pipe (cat FILE | replay -)": [
            "sh",
            "-c",
            'cat "$1" | "$2" convert.py replay -',
            "sh",
            str(clean),
            py,
        ],
        "replay of the file gzipped (level 1)": [py, "convert.py", "replay", str(packed)],
        "(b) DuckDB, alert lines": [py, "-c", DUCKDB_ALERTS, str(clean)],
        "(b1) DuckDB, count only": [py, "-c", DUCKDB_COUNT, str(clean)],
        "(bL) DuckDB, alert lines with line numbers": [py, "-c", DUCKDB_ALERTS_LINES, str(clean)],
    }
    if args.python_loop:
        runs["(a) Python json loop"] = [py, "-c", PYTHON_LOOP, str(clean)]
    suffixes = ("", "-correlated", "-lines", "-robust")
    sql = [args.dir / f"every-rule{suffix}.sql" for suffix in suffixes]
    every_rule_sql = [py, "-c", EVERY_RULE_SQL, project, str(clean), *map(str, sql)]
    subprocess.run(every_rule_sql, cwd=ROOT, check=True)
    whole, whole_lined = "(bC) DuckDB, every rule and correlation", "(bCL) (bC) with line numbers"
    whole_robust = "(bCI) (bC) skipping bad lines (ignore_errors)"
    runs["(b*) DuckDB, every rule's condition"] = [py, "-c", RUN_SQL_FILE, str(sql[0])]
    runs[whole] = [py, "-c", RUN_SQL_FILE, str(sql[1])]
    runs[whole_lined] = [py, "-c", RUN_SQL_FILE, str(sql[2])]
    runs[whole_robust] = [py, "-c", RUN_SQL_FILE, str(sql[3])]
    if args.separate:  # what replay did before: one read of the file per rule
        runs["every rule, one read per rule"] = [py, "-c", ONE_RULE_EACH, project, str(clean)]
    # every run finds the modules' bytecode and the rules' conversion cached, as replay's runs
    # after its first do (the start-up of a first run is measured on its own, above)
    compile_modules = [py, "-m", "compileall", "-q", "k8s_audit_detect"]
    subprocess.run(compile_modules, cwd=ROOT, check=True, env=child_environment())
    for warm in ([py, "convert.py", "replay"], [py, "-c", EVERY_RULE, project]):
        subprocess.run(
            [*warm, str(empty)], cwd=ROOT, check=True, capture_output=True, env=child_environment()
        )
    results: dict[str, list[Run]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, command in runs.items():
            results[name].append(measure(command))

    def seconds(name: str) -> float:
        return statistics.median(r.seconds for r in results[name])

    def cpu(name: str) -> float:
        return statistics.median(r.cpu for r in results[name])

    def mib(name: str) -> float:
        return max(r.mib for r in results[name])

    print(f"{'run':44} {'wall':>8} {'events/s':>10} {'cpu':>8} {'peak memory':>12}")
    for name in runs:
        rate = f"{args.events / seconds(name):>10,.0f}" if "empty" not in name else " " * 10
        print(f"{name:44} {seconds(name):6.2f} s {rate} {cpu(name):6.2f} s {mib(name):8.0f} MiB")

    shipped, every = "(b) DuckDB, alert lines", "(b*) DuckDB, every rule's condition"
    lined = "(bL) DuckDB, alert lines with line numbers"
    counts = {
        "replay": results["replay"][0].token,
        "(b)": results[shipped][0].lines,
        "(b1)": int(results["(b1) DuckDB, count only"][0].first),
    }
    if args.python_loop:
        counts["(a)"] = int(results["(a) Python json loop"][0].first)
    assert len(set(counts.values())) == 1, counts
    all_rules = results["replay, every rule"][0]
    assert all_rules.token == counts["replay"]
    # the same job: every rule's alerts and every correlation's groups
    for reference in (whole, whole_lined, whole_robust):
        assert results[reference][0].lines == all_rules.lines, (reference, all_rules.lines)
    summary = all_rules.stderr.splitlines()[-1]  # replay: 1 file, ..., 14 rules, 9 alerts
    rules_line = next(part for part in summary.split(", ") if part.endswith(" rules"))
    print(f"alerts of the shipped rule: {counts['replay']:,} (replay, (b), (b1) agree)")
    print(
        f"every rule: {rules_line}, {all_rules.lines:,} alerts (as many as (bC)), of which "
        f"{all_rules.lines - all_rules.token:,} not the shipped rule's (correlation groups, "
        f"test rules; (b*): {results[every][0].lines:,} events alerting)"
    )
    start, first = (
        "replay, empty file (start-up)",
        "replay, empty file, rules converted (first run)",
    )

    def ratio(name: str, reference: str) -> str:
        return f"{seconds(name) / seconds(reference):.2f}x"

    print(
        f"replay, every rule vs (bC), the same job in one hand-written query: "
        f"{ratio('replay, every rule', whole)} the time, "
        f"{cpu('replay, every rule') / cpu(whole):.2f}x the cpu (bound <= 1.3x); without "
        "replay's start-up: "
        f"{(seconds('replay, every rule') - seconds(start)) / seconds(whole):.2f}x; a first "
        "run, which converts the rules (its start-up's extra added): "
        f"{(seconds('replay, every rule') + seconds(first) - seconds(start)) / seconds(whole):.2f}x"
    )
    print(
        "replay, every rule vs (bCL), the same job with line numbers, by hand: "
        f"{ratio('replay, every rule', whole_lined)}; vs (bCI), the same job skipping bad lines "
        f"as replay does: {ratio('replay, every rule', whole_robust)}"
    )
    for name in ("replay", "replay, every rule"):
        bad = f"{name}, one malformed line"
        print(
            f"{bad} vs clean: {ratio(bad, name)} the time (bound <= 2x), "
            f"peak memory {mib(bad) / mib(name):.2f}x (bound 0.8-1.2x)"
        )
    print(
        "against queries that do less (the TokenRequest rule alone, no correlation): "
        f"replay vs (b) {ratio('replay', shipped)}, vs (bL), which numbers lines as replay "
        f"does, {ratio('replay', lined)}, vs (b1) {ratio('replay', '(b1) DuckDB, count only')}; "
        f"every rule vs (b) {ratio('replay, every rule', shipped)}, vs (b*) (the plain rules' "
        f"conditions, no correlation) {ratio('replay, every rule', every)}"
    )
    if args.separate:
        separate = "every rule, one read per rule"
        print(
            f"every rule in one pass vs one read per rule: {ratio('replay, every rule', separate)}"
        )
    if args.python_loop:
        print(f"replay vs (a): {seconds('(a) Python json loop') / seconds('replay'):.1f}x faster")
    for name, reference in (("replay, every rule", whole), ("replay", shipped)):
        rounds = zip(results[name], results[reference], strict=True)
        spread = ", ".join(f"{r.seconds / h.seconds:.2f}x" for r, h in rounds)
        print(f"{name} vs {reference[:4]}, round by round: {spread}")


if __name__ == "__main__":
    main()
