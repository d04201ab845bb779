"""The package's shape: module-level imports form no cycle, and pixels are known in one place."""

import ast
import pathlib

import mnist_vae

PACKAGE = pathlib.Path(mnist_vae.__file__).parent


def _module_imports(path):
    """mnist_vae modules imported at module level (not inside functions) by the file at ``path``."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_vae"):
            parts = node.module.split(".")
            found.add(parts[1] if len(parts) > 1 else None)
            if len(parts) == 1:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mnist_vae."))
    found.discard(None)
    return found


def test_module_level_imports_form_no_cycle():
    graph = {p.stem: _module_imports(p) for p in PACKAGE.glob("*.py")}
    state = {}

    def visit(module, path):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join(path + [module])}"
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            visit(dep, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
    assert graph["observation"] == set(), "the observation model depends on nothing else in the package"


def test_only_the_observation_module_knows_the_bernoulli_and_the_28x28_crop():
    for path in PACKAGE.glob("*.py"):
        if path.stem in ("observation", "models", "data"):
            continue  # models registers the likelihood names it builds for; data describes files
        code = path.read_text()
        assert "sigmoid(" not in code and "bernoulli_log_prob" not in code, path.name
        assert "[2:-2" not in code and "PAD:-PAD" not in code, path.name
