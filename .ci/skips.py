"""
Every test a CI leg skipped, with its reason, from the leg's JUnit XML
report; exits 1 if one of them is not explained by .ci/expected-skips for
that leg (or the report is missing). Usage: python3 .ci/skips.py LEG REPORT.xml
"""

import sys
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

EXPECTED = Path(__file__).with_name("expected-skips")


def expected_reasons(leg: str) -> set[str]:
    reasons = set()
    for line in EXPECTED.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, reason = line.split("\t", 1)
            if name == leg:
                reasons.add(reason.strip())
    return reasons


def skipped(report: Path) -> list[tuple[str, str]]:
    """(test, reason) for each skipped test in a pytest --junitxml report."""
    found = []
    for case in ElementTree.parse(report).iter("testcase"):
        skip = case.find("skipped")
        if skip is not None:
            test = f"{case.get('classname')}::{case.get('name')}"
            found.append((test, skip.get("message", "").removeprefix("Skipped: ").strip()))
    return found


def main(leg: str, report: str) -> int:
    if not Path(report).is_file():
        print(f"skips ({leg}): no report at {report}: the leg did not run to its end")
        return 1
    allowed = expected_reasons(leg)
    by_reason = defaultdict(list)
    for test, reason in skipped(Path(report)):
        by_reason[reason].append(test)
    unexplained = 0
    print(f"skips ({leg}): {sum(map(len, by_reason.values()))} tests")
    for reason, tests in sorted(by_reason.items()):
        explained = reason in allowed
        unexplained += 0 if explained else len(tests)
        print(f"  {len(tests):3d} {'expected  ' if explained else 'UNEXPECTED'} {reason}")
        for test in tests:
            print(f"        {test}")
    if unexplained:
        print(f"skips ({leg}): {unexplained} skipped for a reason .ci/expected-skips does not give for this leg")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
