"""The package's shape: no import cycle, small modules and classes, public Keras APIs, pixels known in one place."""

import ast
import pathlib

import mnist_vae

PACKAGE = pathlib.Path(mnist_vae.__file__).parent


# A module does one job (past about 300 lines it is probably doing two); a class, likewise.
MODULE_LINES, CLASS_LINES = 300, 120


def _modules():
    """Dotted name -> path of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path, modules):
    """The package's modules ``path`` imports, at module level or inside functions alike."""
    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_vae"):
            for alias in node.names:  # "from mnist_vae.models import conv" imports the submodule
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else resolve(node.module))
        elif isinstance(node, ast.Import):
            found.update(resolve(a.name) for a in node.names if a.name.startswith("mnist_vae"))
    return found


def test_imports_form_no_cycle_counting_imports_inside_functions():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
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
    for name, deps in graph.items():
        if name.startswith("mnist_vae.observation"):  # the observation models depend on nothing else
            assert all(dep.startswith("mnist_vae.observation") for dep in deps), (name, deps)


def test_modules_and_classes_stay_small():
    for name, path in _modules().items():
        lines = len(path.read_text().splitlines())
        assert lines <= MODULE_LINES, f"{name} has {lines} lines (at most {MODULE_LINES}): split it by job"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                assert size <= CLASS_LINES, f"{name}.{node.name} has {size} lines (at most {CLASS_LINES})"


def test_no_private_keras_attribute_outside_the_canary_tested_one():
    """No ``obj._name`` but on self, no ``super()._name``, and no override of a private Keras method."""
    import importlib
    import inspect

    import keras

    allowed = {"os._exit"}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    assert ast.unparse(node) in allowed, f"{name}:{node.lineno}: {ast.unparse(node)}"
        if name.endswith("__main__"):
            continue  # running it is the command line
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if inspect.isclass(cls) and cls.__module__ == name and issubclass(
                    cls, (keras.layers.Layer, keras.callbacks.Callback)):
                keras_bases = [base for base in cls.__mro__ if base.__module__.startswith("keras")]
                for attr in vars(cls):
                    if attr.startswith("_") and not attr.startswith("__"):
                        assert not any(hasattr(base, attr) for base in keras_bases), f"{name}.{cls.__name__}.{attr}"


def test_no_likelihood_is_named_outside_the_observation_package():
    """Code elsewhere asks the observation model (``vae.observation``, the registry): no name is compared or assumed."""
    from mnist_vae.observation import LIKELIHOODS

    for name, path in _modules().items():
        if name.startswith("mnist_vae.observation"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in LIKELIHOODS:
                raise AssertionError(f"{name}:{node.lineno} names the likelihood {node.value!r}")


def test_only_the_observation_module_knows_the_bernoulli_and_the_28x28_crop():
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name in ("observation", "models", "data"):
            continue  # models registers the likelihood names it builds for; data describes files
        code = path.read_text()
        assert "sigmoid(" not in code and "bernoulli_log_prob" not in code, path.name
        assert "[2:-2" not in code and "PAD:-PAD" not in code, path.name
