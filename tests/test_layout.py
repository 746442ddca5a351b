"""
What tests share lives in tests/support/: no test file, conftest or bench
script imports another test file, so moving or deleting a test never breaks
another one.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_tests_and_benchmarks_import_only_the_support_package_from_tests():
    files = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").glob("*.py")]
    wrong = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in files
        for module in imported_modules(path)
        if module.startswith("tests.") and not module.startswith("tests.support")
    }

    assert len(files) > 100
    assert not wrong, sorted(wrong)
