"""
CI (.ci/run) names every skipped test with its reason, and fails on a skip
that .ci/expected-skips does not explain for the leg (.ci/skips.py).
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REDIS_LEG_REASON = "the Redis broker (CI's Redis leg)"


def broker_marked(paths: list[str]) -> set[str]:
    """The tests among `paths` that CI's Redis leg runs (`-m broker`, as .ci/run asks), by a real collection."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "broker", "-p", "no:cacheprovider", *paths],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    return {line.split("[")[0] for line in result.stdout.splitlines() if "::" in line}


def skipped_report(tmp_path: Path, reason: str) -> Path:
    """A real pytest run of one passing and one skipped test, reported as CI's legs are (--junitxml)."""
    (tmp_path / "test_some.py").write_text(
        "import pytest\n\n"
        "def test_passes():\n    pass\n\n"
        f"def test_skips():\n    pytest.skip({reason!r})\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    report = tmp_path / "report.xml"
    env = {name: value for name, value in os.environ.items() if name != "PYTEST_ADDOPTS"}
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:django", "-p", "no:cacheprovider", f"--junitxml={report}",
         "test_some.py"],
        cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120,
    )
    return report


def check(leg: str, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "skips.py"), leg, str(report)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_a_skip_the_leg_expects_is_reported_with_its_reason_and_passes(tmp_path):
    result = check("postgresql", skipped_report(tmp_path, REDIS_LEG_REASON))

    assert result.returncode == 0, result.stdout
    assert f"1 expected   {REDIS_LEG_REASON}" in result.stdout
    assert "test_some::test_skips" in result.stdout


@pytest.mark.slow
def test_a_skip_the_leg_does_not_expect_fails_the_run(tmp_path):
    result = check("redis", skipped_report(tmp_path, REDIS_LEG_REASON))
    unknown = check("sqlite", skipped_report(tmp_path, "no Redis server on 127.0.0.1:6379"))

    assert result.returncode == 1 and f"UNEXPECTED {REDIS_LEG_REASON}" in result.stdout
    assert unknown.returncode == 1 and "UNEXPECTED no Redis server on 127.0.0.1:6379" in unknown.stdout


def test_a_leg_without_a_report_fails_the_run(tmp_path):
    result = check("sqlite", tmp_path / "missing.xml")

    assert result.returncode == 1 and "no report" in result.stdout


@pytest.mark.slow
def test_every_test_that_skips_for_the_redis_leg_is_marked_for_it():
    skipping = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        if path.name == "test_ci.py" or REDIS_LEG_REASON not in path.read_text():
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") \
                    and REDIS_LEG_REASON in ast.get_source_segment(path.read_text(), node):
                skipping[f"{path.relative_to(ROOT)}::{node.name}"] = str(path.relative_to(ROOT))

    assert "tests/jobs/test_recovery.py" in skipping.values()
    marked = broker_marked(sorted(set(skipping.values())))
    assert set(skipping) <= marked, set(skipping) - marked


def test_the_redis_leg_selects_its_tests_by_the_marker_alone():
    script = (ROOT / ".ci" / "run").read_text()

    assert "pytest -m broker" in script
    assert "broker:" in (ROOT / "pytest.ini").read_text()
