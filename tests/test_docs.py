"""
The documentation keeps up with the code: every environment variable the
service reads is in docs/configuration.md's table, the README stays a short
front door with the test command CI runs, and every relative link in the
README and docs/ leads to a file and heading that exist.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
# Where the code reads its environment: settings, and what settings' docstring
# says is read before Django starts (the web server's processes, a worker's GPU).
READ_ENVIRONMENT = ("videogen/settings.py", "videogen/gunicorn.py", "generation/devices.py")
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def environment_names(source: str) -> set[str]:
    """The variables a module reads: env*("NAME", ...), os.environ.get/getenv("NAME"), environ["NAME"]."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = ast.unparse(node.func)
            if function.startswith("env") or function in ("os.environ.get", "os.getenv", "os.environ.setdefault"):
                names.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
            if isinstance(node.slice, ast.Constant):
                names.add(node.slice.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A family of variables read by prefix, e.g. VIDEOGEN_MODEL_SOURCE_<NAME>.
            if re.fullmatch(r"VIDEOGEN_[A-Z0-9_]+_", node.value):
                names.add(node.value + "<NAME>")
    return {name for name in names if isinstance(name, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*(<NAME>)?", name)}


def table_rows(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.startswith("| "))


def test_the_parser_finds_each_way_settings_read_the_environment():
    names = environment_names((ROOT / "videogen" / "settings.py").read_text())

    # envstr, envint, envfloat, envbool, envlist, envmap, envrate, envseconds_or_off, os.environ.get, a prefix.
    assert {"VIDEOGEN_SECRET_KEY", "VIDEOGEN_MAX_ATTEMPTS", "VIDEOGEN_HEARTBEAT_TIMEOUT", "VIDEOGEN_DEBUG",
            "VIDEOGEN_ALLOWED_HOSTS", "VIDEOGEN_MODEL_QUEUES", "VIDEOGEN_RATE_LIMIT_SUBMIT",
            "VIDEOGEN_CHECKPOINT_SECONDS", "VIDEOGEN_DEVICE", "PROMETHEUS_MULTIPROC_DIR",
            "VIDEOGEN_MODEL_SOURCE_<NAME>"} <= names
    assert len(names) > 70


@pytest.mark.parametrize("path", READ_ENVIRONMENT)
def test_every_variable_the_code_reads_is_in_the_configuration_table(path):
    names = environment_names((ROOT / path).read_text())
    table = table_rows(CONFIGURATION)

    assert names
    missing = sorted(name for name in names if f"`{name}`" not in table)
    assert not missing, f"{path} reads {missing}, which docs/configuration.md's table does not list"


def test_the_readme_is_a_short_front_door_with_the_commands_first():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()

    assert len(lines) <= 250, len(lines)
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].startswith("make run ")
    assert first_block.splitlines()[1].startswith("make test ")
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:4] == ["## Usage", "## Configuration", "## Scaling out", "## Operations"], headings


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        base = slug(line.lstrip("#"))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_the_slug_is_githubs():
    assert slug(" Images: image to video, first and last frame, extend") == (
        "images-image-to-video-first-and-last-frame-extend"
    )
    assert slug(" Input images (`generation/images.py`)") == "input-images-generationimagespy"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(document):
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{document.relative_to(ROOT)} links to {broken}"
