"""
How the project's modules import each other, read from their source (every
import, including those inside functions): no circles, the engine free of
jobs and settings, and jobs/'s rooms in one direction (docs/architecture.md).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("videogen", "jobs", "generation")

# generation/'s worker, which runs jobs through the engine: the rest of generation/ is the engine,
# plain parameters in, frames and files out (docs/architecture.md), so a new module is held to it.
WORKER = ("generation.runner", "generation.tasks", "generation.worker", "generation.apps", "generation.management")

# jobs/'s rooms, each allowed to import only the rooms after it in this list.
ROOMS = ["jobs.api", "jobs.webhooks", "jobs.services", "jobs.metrics", "jobs.representation", "jobs.scheduling",
         "jobs.models"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    module_name(path): path
    for package in PACKAGES
    for path in (ROOT / package).rglob("*.py")
    if "migrations" not in path.parts
}


ENGINE = {
    name for name in MODULES
    if name.startswith("generation.") and not any(name == w or name.startswith(w + ".") for w in WORKER)
}


def project_module(name: str) -> str | None:
    """The project module an imported name lives in (`jobs.models.Status` -> `jobs.models`), if any."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from generation import denoise` imports generation.denoise: the name, not only the package.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        targets = {project_module(imported) for imported in imports_of(path)}
        edges[name] = {target for target in targets if target and target != name}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    return found


def room(module: str) -> str | None:
    return next((name for name in ROOMS if module == name or module.startswith(name + ".")), None)


def test_the_graph_sees_the_project_and_imports_inside_functions():
    edges = graph()

    assert len(edges) > 60
    assert "jobs.models.job" in edges["jobs.models"]
    # torch-free modules import the engine's heavy parts late, inside functions.
    assert "generation.pipelines" in edges["generation.runner"]


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_the_project_imports_itself_back_through_others():
    assert circles(graph()) == []


def test_the_engine_imports_nothing_of_jobs_or_the_settings():
    edges = graph()
    wrong = {
        f"{module} imports {target}"
        for module in ENGINE
        for target in edges[module]
        if not target.startswith("generation.") or target not in ENGINE
    }
    settings = {
        f"{module} imports {name}"
        for module in ENGINE
        for name in imports_of(MODULES[module])
        if name.startswith(("django.conf", "django.db", "videogen"))
    }

    assert {"generation.pipelines", "generation.encoding", "generation.registry"} <= ENGINE
    assert not wrong, sorted(wrong)
    assert not settings, sorted(settings)


def test_the_rooms_of_jobs_import_only_the_rooms_below_them():
    upward = set()
    for module, targets in graph().items():
        if room(module) is None:
            continue
        for target in targets:
            if target.startswith("jobs.") and room(target) != room(module):
                if room(target) is None or ROOMS.index(room(target)) < ROOMS.index(room(module)):
                    upward.add(f"{module} imports {target}")

    assert not upward, sorted(upward)


def test_the_models_import_only_the_engine_s_parameters():
    outside = {
        f"{module} imports {target}"
        for module, targets in graph().items()
        if room(module) == "jobs.models"
        for target in targets
        if room(target) != "jobs.models" and target != "generation.params"
    }

    assert not outside, sorted(outside)
