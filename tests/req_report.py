"""List every requirement criterion with the tests that prove it.

    python tests/req_report.py

Criteria come from ``docs/requirements/`` (A = connection recovery,
B = connection crisis fix; "A1.4" is requirement 1, criterion 4 of A). Tests
claim criteria with ``@pytest.mark.req("A1.4")``. A criterion no test claims
is listed as "missing".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"A": "A-connection-recovery.md", "B": "B-connection-crisis-fix.md"}


def criteria() -> dict[str, str]:
    """{"A1.4": "WHEN connection attempts fail, ..."} in document order."""
    found: dict[str, str] = {}
    for prefix, name in DOCS.items():
        requirement = None
        for line in (ROOT / "docs" / "requirements" / name).read_text(encoding="utf-8").splitlines():
            head = re.match(r"###\s+Requirement\s+(\d+)", line)
            if head:
                requirement = head.group(1)
                continue
            item = re.match(r"(\d+)\.\s+(.*)", line.strip())
            if item and requirement:
                found[f"{prefix}{requirement}.{item.group(1)}"] = item.group(2).strip()
    return found


def claimed() -> dict[str, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "req.json"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "tests", "benchmarks", "--collect-only", "-q",
             "-p", "no:cacheprovider",
             f"--req-json={out}"],
            cwd=ROOT, capture_output=True, text=True,
        )
        if proc.returncode not in (0, 5) or not out.exists():
            sys.exit(f"test collection failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return json.loads(out.read_text())


def main() -> int:
    table = criteria()
    claims = claimed()
    unknown = sorted(set(claims) - set(table))
    covered = 0
    for crit, text in table.items():
        tests = sorted({t.split("[")[0] for t in claims.get(crit, [])})
        print(f"{crit:6} {text[:96]}")
        if tests:
            covered += 1
            for t in tests:
                print(f"         {t}")
        else:
            print("         missing: no test claims it yet")
    print(f"\n{covered}/{len(table)} criteria have at least one test.")
    if unknown:
        print(f"Tests claim criteria that do not exist: {', '.join(unknown)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
