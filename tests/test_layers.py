"""Imports run one way (ARCHITECTURE.md): a module imports only modules of its own layer or of layers below it.
Function-level imports count too: a lazy import is still a dependency."""

import ast
from pathlib import Path

import lifelong

ROOT = Path(lifelong.__file__).parent

# lowest first; a module's layer is that of the longest name matching it ("" is the package's __init__)
LAYERS = [
    ["errors", "io", "heap", "layout", "devices", "distributed", "threads", "progress", "metrics", "registry"],
    ["data", "configfile", "oos"],
    ["backbones"],
    ["adapters"],
    ["routing", "methods", "tta"],
    ["evaluation", "model", "report", "tracking"],
    ["store", "experiment"],
    ["store.server", "bench", "api", "export", "options", "adaptation"],
    ["store.cli", "cli", ""],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "lifelong" or node.module.startswith("lifelong.")):
                target = node.module[len("lifelong."):] if node.module != "lifelong" else ""
            else:
                continue
            for alias in node.names:  # `from . import methods` imports the module methods
                sub = f"{target}.{alias.name}" if target else alias.name
                out.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            out |= {a.name[len("lifelong."):] for a in node.names if a.name.startswith("lifelong.")}
    return out - {name}


def layer(name: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (n == "" and name == "") or (n and (name == n or name.startswith(n + "."))):
                if best is None or len(n) > best[1]:
                    best = (i, len(n))
    assert best is not None, f"lifelong.{name} is in no layer: add it to LAYERS and ARCHITECTURE.md"
    return best[0]


def test_every_import_points_to_the_same_layer_or_below():
    found = modules()
    known = set(found)
    upward = [f"lifelong.{m} (layer {layer(m)}) imports lifelong.{t} (layer {layer(t)})"
              for m, path in sorted(found.items()) for t in sorted(imports(m, path, known)) if layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    fake = tmp_path / "fake.py"  # read as if it were lifelong/data/fake.py
    fake.write_text("import torch\n\ndef f():\n    from ..cli import app\n    from . import task\n")
    got = imports("data.fake", fake, set(modules()))
    assert got == {"cli", "data.task"}
    assert layer("cli") > layer("data.fake")  # so the first test would list it
