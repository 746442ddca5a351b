"""
What production installs: the image and `make run` get the runtime only, the
lock files pin what requirements*.txt name, and every third-party module the
runtime code imports comes from a runtime requirement.
"""

import ast
import importlib.metadata
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_CODE = [ROOT / "videogen", ROOT / "jobs", ROOT / "generation", ROOT / "manage.py"]
PROJECT_PACKAGES = {"videogen", "jobs", "generation"}

# Test and bench tools, by distribution name; none may reach production.
TEST_TOOLS = {
    "pytest", "pytest-django", "schemathesis", "hypothesis", "trustme", "moto",
    "playwright", "kubernetes", "httpx-sse", "pip-tools",
}

# What torch's CUDA build (docker/requirements.lock) needs and the CPU build does not.
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def named(path: Path) -> dict[str, str]:
    """A requirements file's own `name==version` lines (not its -r includes), by canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s;\\]+).*", line)
        assert match, f"{path.name}: not a pin: {line!r}"
        pins[canonical(match[1])] = match[2]
    return pins


def locked(path: Path) -> dict[str, str]:
    """A pip-compile lock file's pins, by canonical name; each must carry a hash."""
    text = path.read_text()
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", text, re.M)
    pins = {canonical(name): version for name, version, _hashes in entries}
    requirement_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert len(requirement_lines) == len(pins), f"{path.name}: a line without a hash: {requirement_lines}"
    return pins


def public(version: str) -> str:
    return version.split("+", 1)[0]


def test_the_image_installs_the_runtime_lock_and_nothing_else():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    instructions = re.sub(r"\\\n", " ", dockerfile).splitlines()
    copies = [shlex.split(line)[1:] for line in instructions if line.startswith("COPY ")]
    installs = [shlex.split(line)[1:] for line in instructions if line.startswith("RUN ") and "pip" in line]

    assert installs, "the Dockerfile installs nothing with pip"
    for command in installs:
        assert command[:2] == ["pip", "install"] and "&&" not in command, command
        assert "--require-hashes" in command, command
        arguments = [a for a in command[2:] if a != "--require-hashes"]
        # Only -r FILE pairs: no package named on the command line.
        assert arguments[::2] == ["-r"] * (len(arguments) // 2) and len(arguments) % 2 == 0, command
        assert arguments[1::2] == ["requirements.lock"], command
    assert ["docker/requirements.lock", "."] in copies
    assert not [c for c in copies if any("requirements" in part and "dev" in part for part in c)]


def test_the_runtime_requirements_and_locks_hold_no_test_tools():
    dev_named = named(ROOT / "requirements-dev.txt")
    # The list is of real tools: each is one requirements-dev.txt names.
    assert TEST_TOOLS - {"pip-tools"} <= set(dev_named), TEST_TOOLS - set(dev_named)
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()

    for runtime in (named(ROOT / "requirements.txt"), locked(ROOT / "requirements.lock"),
                    locked(ROOT / "docker" / "requirements.lock")):
        assert not {name for name in runtime if name in TEST_TOOLS or name.startswith("pytest")}


def test_the_locks_pin_what_the_requirements_files_name():
    runtime, dev = named(ROOT / "requirements.txt"), named(ROOT / "requirements-dev.txt")
    runtime_lock = locked(ROOT / "requirements.lock")
    dev_lock = locked(ROOT / "requirements-dev.lock")
    image_lock = locked(ROOT / "docker" / "requirements.lock")

    # A requirement edited without `make lock` fails here.
    for name, version in runtime.items():
        assert public(runtime_lock.get(name, "")) == version, (name, version, runtime_lock.get(name))
        assert public(image_lock.get(name, "")) == version, (name, version, image_lock.get(name))
    for name, version in (runtime | dev).items():
        assert public(dev_lock.get(name, "")) == version, (name, version, dev_lock.get(name))

    # Tests run exactly what `make run` installs, test tools on top.
    assert {name: dev_lock.get(name) for name in runtime_lock} == runtime_lock
    # The image has the same closure, torch as the CUDA build with its own libraries.
    assert {name: public(v) for name, v in runtime_lock.items()} == {
        name: public(v) for name, v in image_lock.items() if not CUDA_ONLY.match(name)
    }
    assert "+" not in image_lock["torch"] and any(CUDA_ONLY.match(name) for name in image_lock)


def imported_modules() -> dict[str, set[str]]:
    """Top-level third-party modules the runtime code names, each with where."""
    found: dict[str, set[str]] = {}
    files = [p for root in RUNTIME_CODE for p in ([root] if root.is_file() else root.rglob("*.py"))]
    providers = importlib.metadata.packages_distributions()
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        names = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.append(node.module)
            elif (
                path.name == "settings.py" and isinstance(node, ast.Constant) and isinstance(node.value, str)
                and re.fullmatch(r"[a-z_][a-z0-9_]*(\.\w+)*", node.value)
                and node.value.split(".")[0] in providers
            ):
                # INSTALLED_APPS, MIDDLEWARE, storage backends: modules named by string.
                names.append(node.value)
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in PROJECT_PACKAGES:
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_module_the_runtime_imports_is_a_runtime_requirement():
    runtime = set(named(ROOT / "requirements.txt"))
    providers = importlib.metadata.packages_distributions()
    modules = imported_modules()
    # The walk sees the imports it must: the engine's, the queue's, and the string-named apps.
    assert {"torch", "diffusers", "django_q", "rest_framework", "storages", "whitenoise"} <= set(modules)

    missing = {
        module: (sorted(where), providers.get(module))
        for module, where in modules.items()
        if not runtime & {canonical(d) for d in providers.get(module, [])}
    }
    assert not missing, f"imported by the runtime, not named in requirements.txt: {missing}"
