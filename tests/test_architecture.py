"""The house rules, checked: no import cycles (imports inside functions count), no module of
gpunet over 400 lines, no module reading another module's private names."""
import ast
import pathlib

import gpunet

PKG = pathlib.Path(gpunet.__file__).parent
MAX_LINES = 400


def _modules():
    """``{dotted name: path}`` of every module in the package."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module, path, level, name):
    """The absolute name of ``from <level dots><name>`` written in ``module``."""
    if level == 0:
        return name
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph():
    """Edges module -> gpunet modules it imports anywhere in its file (``from pkg import sub`` points at
    the submodule ``pkg.sub`` when there is one, else at ``pkg``)."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path, node.level, node.module)
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            targets |= {n for n in names if n in modules and n != module}
        graph[module] = targets
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_import_graph_is_read_and_has_no_cycle():
    graph = import_graph()
    assert "gpunet.trainers" in graph["gpunet.models"]                   # the walk sees real edges,
    assert "gpunet.distributed" in graph["gpunet.trainers.trainer"]      # inside functions too
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]   # and finds cycles
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_shim_is_at_the_bottom():
    graph = import_graph()
    assert graph["gpunet.backend"] <= {"gpunet.errors"}
    assert "gpunet.tensor" not in graph["gpunet.functional"] and "gpunet.tensor" not in graph["gpunet.autograd"]


def test_no_module_is_over_the_line_budget():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (at most {MAX_LINES} lines each): {long}"


def test_no_module_reads_another_modules_private_names():
    """``x._name`` only on ``self``/``cls``/the module's own objects: an import of ``_name`` from another
    gpunet module, or ``module._name`` on an imported module, is reaching into someone else's house."""
    offenders = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text())
        imported_modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                for alias in node.names:
                    if alias.name.startswith("_"):
                        offenders.append(f"{module}: from ... import {alias.name}")
                    imported_modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                imported_modules |= {(a.asname or a.name).split(".")[0] for a in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in imported_modules):
                offenders.append(f"{module}: {node.value.id}.{node.attr}")
    assert offenders == [], offenders


# The floors of the README's "How it is built": a module imports only from its own floor or below.
FLOORS = {"backend": 1, "errors": 1, "fileio": 1, "_registry": 1, "kernels": 2, "functional": 2, "random": 2,
          "functional_conv": 2,
          "autograd": 3, "tensor": 3, "ops": 3, "higher_order": 3, "activations": 4, "initializers": 4, "losses": 4, "metrics": 4,
          "optimizers": 4, "distributed": 4, "layers": 5, "trainers": 6, "callbacks": 6, "saving": 6, "models": 7,
          "datasets": 8, "utils": 8, "naive": 8}


def test_each_floor_imports_only_from_the_floors_below():
    graph = import_graph()

    def floor(module):
        top = module.split(".")[1] if "." in module else None
        return 9 if top is None else FLOORS[top]           # gpunet/__init__.py sits on top of everything

    assert {m.split(".")[1] for m in graph if "." in m} == set(FLOORS), "give every new module a floor"
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if floor(b) > floor(a))
    assert upward == [], f"imports from a higher floor: {upward}"
