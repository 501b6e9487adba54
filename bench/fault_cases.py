"""The fault-injection suite, heavier, with the totals issue 19 asks for.

    python bench/fault_cases.py [--concurrent 8] [--out bench/results/fault_cases.json]

Runs every tests/test_faults_*.py case (kill -9 of golf, torchrun and the worker, SIGHUP, a lock held past the busy
timeout, full tmpfs under runs/ and under runs.db, corrupt/foreign/read-only stores, a silent trainer, NaN, bad
shards and tokenizers, N golf runs at once on one store) and reads pytest's JUnit report. Each case asserts its
invariants itself (the row, the steps, the log afterwards), so a failed case is counted against the invariant it
guards: a healthy trainer killed by golf, a run left `running`, steps of train.log missing from runs.db, a bad
input that was not one line with exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# which invariant each file's cases guard
INVARIANT = {
    "test_faults_signals": "runs left running / trainers orphaned",
    "test_faults_repair": "steps missing from runs.db",
    "test_faults_store": "healthy trainers killed by golf",
    "test_faults_disk": "steps missing from runs.db",
    "test_faults_rules": "healthy trainers killed by golf",
    "test_faults_db": "bad inputs not exit 2",
    "test_faults_inputs": "bad inputs not exit 2",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=8, help="golf runs at once on one runs.db")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        env = {**os.environ, "PYTHONPATH": str(REPO), "GOLF_FAULT_CONCURRENT": str(args.concurrent)}
        files = sorted(str(p) for p in (REPO / "tests").glob("test_faults_*.py"))
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        *files], cwd=REPO, env=env)
        cases = []
        for case in ET.parse(report).getroot().iter("testcase"):
            failed = case.find("failure") is not None or case.find("error") is not None
            skipped = case.find("skipped") is not None
            module = case.get("classname", "").rsplit(".", 1)[-1]
            cases.append({"case": case.get("name"), "file": module, "seconds": float(case.get("time", 0)),
                          "result": "skipped" if skipped else "failed" if failed else "passed",
                          "guards": INVARIANT.get(module, "?")})
    totals = {name: sum(1 for c in cases if c["guards"] == name and c["result"] == "failed")
              for name in dict.fromkeys(INVARIANT.values())}
    summary = {"cases": len(cases), "passed": sum(c["result"] == "passed" for c in cases),
               "skipped": sum(c["result"] == "skipped" for c in cases), "violations": totals,
               "concurrent_golf_runs": args.concurrent}
    for c in cases:
        print(f"{c['result']:8} {c['seconds']:6.1f}s  {c['file']}::{c['case']}")
    print(json.dumps(summary, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps({"summary": summary, "cases": cases}, indent=1) + "\n")
    return 0 if summary["passed"] + summary["skipped"] == summary["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
