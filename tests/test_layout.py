import pathlib
import re

CORE = pathlib.Path(__file__).resolve().parents[1] / "qwenlayers" / "core"


def test_core_never_names_a_platform():
    pattern = re.compile(r"a2a3|\ba5|910|950|DAV_|Ascend|torch_npu", re.IGNORECASE)
    hits = [f"{p.name}:{i}: {line.strip()}" for p in CORE.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert hits == []


ROOT = CORE.parent
PLUGINS = ROOT.parent / "plugins"


def _imports(path: pathlib.Path) -> set[str]:
    """Every qwenlayers module a file imports, at module level or inside a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _module_graph() -> dict[str, set[str]]:
    modules = {".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in ROOT.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_cycles_not_even_inside_functions():
    graph = _module_graph()
    graph["qwenlayers"] = set()  # the package's re-exports are its API, not a dependency of its modules
    for deps in graph.values():
        deps.discard("qwenlayers")
    cycles = []

    def visit(node, stack, done):
        if node in stack:
            cycles.append(" -> ".join(stack[stack.index(node):] + [node]))
            return
        if node in done:
            return
        for dep in sorted(graph[node]):
            visit(dep, stack + [node], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [], done)
    assert cycles == []


def test_plugins_import_only_qwenlayers_and_the_plugin_kit():
    """Plugins state facts: they need the package's types and the plugin kit, nothing of the
    runtime or the core (what every target needs is the core's built-in plugin)."""
    allowed = {"qwenlayers", "qwenlayers.plugin_kit"}
    bad = [f"{path.relative_to(PLUGINS)}: {mod}" for path in PLUGINS.glob("*/src/*/*.py")
           for mod in _imports(path) if mod.split(".")[0] == "qwenlayers" and mod not in allowed
           and not any(mod.startswith(a + ".") and mod.count(".") == a.count(".") + 1 for a in allowed)]
    assert bad == []
