"""The import rules of README's "How the code is laid out": layers import only downwards, the
core never imports a door, and no module imports itself back through others (no cycles), lazy
imports inside functions included. Read from the source with `ast`, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("product_studio", "tasks")

# Lowest first. A module's layer is that of the longest prefix listed.
LAYERS: dict[str, tuple[str, ...]] = {
    "base": ("product_studio", "product_studio.config", "product_studio.content_keys", "product_studio.errors", "product_studio.files",
             "product_studio.sniff", "product_studio.naming", "product_studio.content_types",
             "product_studio.backoff", "product_studio.callbacks", "product_studio.presets", "product_studio.scenes",
             "product_studio.examples", "product_studio.backends.registry", "product_studio.backends.model_cache"),
    "image": ("product_studio.imaging", "product_studio.pipeline", "product_studio.backends"),
    "service": ("product_studio.storage", "product_studio.db", "product_studio.models", "product_studio.migrations",
                "product_studio.runtime", "product_studio.auth", "product_studio.fetch", "product_studio.jobs",
                "product_studio.webhooks", "product_studio.publish", "product_studio.provision"),
    "doors": ("product_studio.cli", "product_studio.doctor", "product_studio.web", "product_studio.batch", "tasks"),
}
ORDER = list(LAYERS)
TASK_LAYER = "tasks"  # a door the other doors call into; it never imports them back


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The project's modules that `name` imports anywhere (module level or inside functions),
    except under `if TYPE_CHECKING:`."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    origin = ".".join(base + ([child.module] if child.module else []))
                else:
                    origin = child.module or ""
                found.add(origin)
                found.update(f"{origin}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    own = set()
    for target in found:
        while target and target not in modules:  # `import a.b.c` names a.b.c; `from a import f` names a
            target = target.rpartition(".")[0]
        if target and target != name:
            own.add(target)
    return own


def layer_of(module: str) -> str:
    best, layer = "", None
    for name, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, layer = prefix, name
    assert layer is not None, f"{module} is in no layer: add it to LAYERS (and to the README's drawing)"
    return layer


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_every_module_has_a_layer():
    for module in all_modules():
        layer_of(module)


def test_layers_import_only_downwards():
    wrong = []
    for module, deps in graph().items():
        mine = ORDER.index(layer_of(module))
        for dep in deps:
            if ORDER.index(layer_of(dep)) > mine:
                wrong.append(f"{module} ({layer_of(module)}) imports {dep} ({layer_of(dep)})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_task_layer_never_imports_another_door():
    wrong = [f"{m} imports {d}" for m, deps in graph().items() if m.split(".")[0] == TASK_LAYER
             for d in deps if layer_of(d) == "doors" and d.split(".")[0] != TASK_LAYER]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    g = graph()
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            connect(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_imports():
    """The walk finds lazy imports inside functions and resolves relative ones."""
    g = graph()
    assert "product_studio.pipeline.plan" in g["product_studio.jobs.units"]
    assert "tasks.pipeline" in g["product_studio.web.dispatch"]  # imported inside a function
