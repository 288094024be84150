"""The house rules of `../shared/DESIGN.md`, read from the source: no import circles, no imports up the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "mobilesam"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(module: str, *, at_import_time: bool) -> set[str]:
    """The mobilesam modules `module` imports: at import time only (module level), or anywhere (functions too)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    # Imports for type checkers only never run, so they tie nothing together.
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    nodes = tree.body if at_import_time else [node for node in ast.walk(tree) if id(node) not in typing_only]
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = (
                ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                if node.level
                else node.module
            )
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


@pytest.mark.parametrize("at_import_time", [True, False], ids=["at import time", "inside functions too"])
def test_no_import_circles(at_import_time):
    # A function-level import is a dependency all the same: it only hides the circle until the call.
    graph = {module: _imports(module, at_import_time=at_import_time) for module in MODULES}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


def test_modeling_imports_only_modeling():
    for module in MODULES:
        if module.startswith("mobilesam.modeling"):
            outside = {name for name in _imports(module, at_import_time=False) if not name.startswith("mobilesam.modeling")}
            assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("top", ["mobilesam.cli", "mobilesam.server"])
def test_nothing_below_the_top_imports_it(top):
    # The CLI may start the service; nothing else reaches up to either.
    allowed = ("mobilesam.cli", top)
    for module in MODULES:
        if module.startswith(allowed):
            continue
        upward = {name for name in _imports(module, at_import_time=False) if name.startswith(top)}
        assert not upward, f"{module} imports {sorted(upward)}, above it"


# Utilities that every layer uses; one import of ours from them would tie the layers together.
LEAVES = ["mobilesam.atomic", "mobilesam.errors", "mobilesam.masks"]


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaves_import_nothing_of_ours(leaf):
    imported = _imports(leaf, at_import_time=False)
    assert not imported, f"{leaf} imports {sorted(imported)}"


# (lower, higher): the lower module never imports the higher one, not even inside a function.
# io/'s writers take `Results`; the registry's builder loads through weights.py; val's plot draws a report.
BELOW = [
    ("mobilesam.results", "mobilesam.io"),
    ("mobilesam.weights", "mobilesam.registry"),
    ("mobilesam.val.report", "mobilesam.val.plot"),
]


@pytest.mark.parametrize(("lower", "higher"), BELOW)
def test_lower_layers_do_not_import_higher_ones(lower, higher):
    upward = {name for name in _imports(lower, at_import_time=False) if name == higher or name.startswith(higher + ".")}
    assert not upward, f"{lower} imports {sorted(upward)}, above it"


def test_only_the_registry_branches_on_model_families():
    # A family is one record in `mobilesam.families`; the registry loops over the records, modeling/ defines
    # the encoders and `fast_encoder` and `four_axis_encoder` are TinyViT's rewrites. Anywhere else, naming an encoder or its config
    # class, or importing an encoder's module, is a branch on the family that a new family would miss.
    aware = (
        "mobilesam.families",
        "mobilesam.registry",
        "mobilesam.modeling",
        "mobilesam.fast_encoder",
        "mobilesam.four_axis_encoder",
    )
    names = {"TinyViT", "TinyViTConfig", "ImageEncoderViT", "ViTConfig"}
    encoder_modules = {"mobilesam.modeling.tiny_vit", "mobilesam.modeling.vit"}

    def references(tree: ast.AST) -> list[str]:
        found = []
        for node in ast.walk(tree):
            name = {ast.Name: "id", ast.Attribute: "attr", ast.alias: "name"}.get(type(node))
            if name and getattr(node, name) in names:
                found.append(f"line {node.lineno}: {getattr(node, name)}")
        return found

    # The check itself finds a branch.
    assert references(ast.parse("if isinstance(model.image_encoder, modeling.TinyViT): pass"))
    for module, path in MODULES.items():
        if module.startswith(aware):
            continue
        found = references(ast.parse(path.read_text()))
        found += [f"imports {name}" for name in sorted(_imports(module, at_import_time=False) & encoder_modules)]
        assert not found, f"{module} names a model family ({', '.join(found)}); put it in the family's record"


# The inference runtimes, and where they may be named: runtime/ opens their sessions, backends/ wraps them,
# export/ writes and converts files with their tools (quantisers, converters) and checks them through runtime/.
RUNTIME_PACKAGES = {"onnxruntime", "openvino", "executorch", "ai_edge_litert", "coremltools", "ncnn"}
# The converters behind the phone formats: export/ alone uses them.
CONVERTER_PACKAGES = {"pnnx", "litert_torch", "onnx2tf", "tensorflow", "nncf"}
RUNTIME_OWNERS = ("mobilesam.runtime", "mobilesam.backends", "mobilesam.export")


def _third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_runtime_backends_and_export_name_a_runtime():
    for module, path in MODULES.items():
        if module.startswith(RUNTIME_OWNERS):
            continue
        named = _third_party_imports(path) & RUNTIME_PACKAGES
        assert not named, f"{module} imports {sorted(named)}; open runtimes in mobilesam.runtime, run them through a backend"


# The layers of docs/architecture.md, from the ground up: a module imports only from its own layer or below.
# The first prefix that matches a module names its layer; what no prefix names is the library (5).
LAYERS = [
    # The package itself is a lazy facade: importing it loads only `lazy`.
    (1, ("mobilesam",)),
    (1, ("mobilesam.errors", "mobilesam.atomic", "mobilesam.masks", "mobilesam.home", "mobilesam.cpu")),
    (1, ("mobilesam.lazy", "mobilesam.embedding", "mobilesam.draw")),
    (2, ("mobilesam.modeling", "mobilesam.fast_encoder", "mobilesam.four_axis_encoder", "mobilesam.fast_decoder")),
    (3, ("mobilesam.weights", "mobilesam.families", "mobilesam.registry", "mobilesam.fidelity")),
    (3, ("mobilesam.transforms", "mobilesam.prompts", "mobilesam.image_state")),
    (3, ("mobilesam.io.images", "mobilesam.io.samples")),
    # OnnxPredictor is a predictor, beside SamPredictor.
    (5, ("mobilesam.runtime.predictor",)),
    (4, ("mobilesam.backends", "mobilesam.runtime", "mobilesam.export")),
    (6, ("mobilesam.cli", "mobilesam.server")),
]


def _layer(module: str) -> int:
    for layer, prefixes in LAYERS:
        if any(module == prefix or (prefix != "mobilesam" and module.startswith(prefix + ".")) for prefix in prefixes):
            return layer
    return 5


def test_imports_go_down_the_layers():
    upward = [
        f"{module} (layer {_layer(module)}) imports {name} (layer {_layer(name)})"
        for module in MODULES
        for name in sorted(_imports(module, at_import_time=False))
        if _layer(name) > _layer(module)
    ]
    assert not upward, "imports up the layers of docs/architecture.md:\n" + "\n".join(upward)
    assert _layer("mobilesam.backends.torch") == 4 and _layer("mobilesam.runtime.predictor") == 5


def test_only_export_converts():
    for module, path in MODULES.items():
        if module.startswith("mobilesam.export"):
            continue
        named = _third_party_imports(path) & CONVERTER_PACKAGES
        assert not named, f"{module} imports {sorted(named)}; converting graphs is mobilesam.export's job"


# The runtimes whose Python side is torch itself (ExecuTorch's bindings take and return torch tensors).
TORCH_RUNTIMES = ("mobilesam.runtime.torchscript", "mobilesam.runtime.executorch")


def test_runtimes_are_torch_free_but_those_built_on_torch():
    for module, path in MODULES.items():
        if module.startswith("mobilesam.runtime") and module not in TORCH_RUNTIMES:
            assert "torch" not in _third_party_imports(path), f"{module} imports torch; the runtimes run without it"
