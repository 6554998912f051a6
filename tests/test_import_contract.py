"""The import contract between vfnet's packages, checked by an AST walk over every .py file.

Rules (a "lazy" import is one inside a def/async def/lambda body; everything else, including
imports in top-level try/if/with blocks and class bodies, is "module level"):

1. vfnet.model imports nothing of ours but vfnet.model.*, anywhere.
2. vfnet.server.runtime never imports torch/torchvision at module level; never imports
   vfnet.server.app, vfnet.export or vfnet.train, anywhere; imports vfnet.model only lazily and only
   from a module whose name contains "torch_backend".
3. vfnet.server.app never imports vfnet.model, vfnet.export, vfnet.train, torch or torchvision, anywhere.
4. vfnet.export imports from vfnet.server.runtime only vfnet.server.runtime.artifact and
   vfnet.server.runtime.backends.tensorrt(.*), and never vfnet.server.app.
5. vfnet.model and vfnet.server.runtime never import vfnet.trt_plugins at module level.
6. vfnet.server.zoo (names, downloads, the cache) imports vfnet.model, vfnet.export and torch only
   lazily (pulling converts, a first use exports; `vfnet models` and a cached model need no torch),
   and never vfnet.server.app, vfnet.server.runtime or vfnet.train. The runtime never imports it
   (rule 2); vfnet.export imports it only lazily, from its command line (rule 4).
7. vfnet.server.predict (bulk detection) runs the runtime as the service does: it never imports
   vfnet.server.app, vfnet.model, vfnet.export, vfnet.train or torch; it imports ray only from
   vfnet.server.predict.ray_job (the --ray job), and av and pyarrow only lazily elsewhere (a run over
   images into .jsonl needs neither extra). The runtime, the app, the zoo and vfnet.export never import it.

Relative imports are resolved against the file's package; `from P import name` counts as importing
P.name when that module or package exists on disk, else as importing P. Literal dynamic imports
(`importlib.import_module("x")`, `__import__("x")`) count too.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"vfnet.model": "model", "vfnet.export": "export", "vfnet.train": "train", "vfnet.server": "server", "vfnet.trt_plugins": "trt_plugins"}
MODEL, EXPORT, TRAIN, PLUGINS = "vfnet.model", "vfnet.export", "vfnet.train", "vfnet.trt_plugins"
RUNTIME, APP, ZOO, PREDICT = "vfnet.server.runtime", "vfnet.server.app", "vfnet.server.zoo", "vfnet.server.predict"
TORCH = ("torch", "torchvision")


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def discover() -> tuple[dict[str, tuple[Path, bool]], set[str]]:
    """{module name: (path, is_package)} for every .py file, and every module/package name on disk."""
    modules: dict[str, tuple[Path, bool]] = {}
    known: set[str] = set()
    for prefix, folder in ROOTS.items():
        root = REPO / folder
        for path in root.rglob("*"):
            if "__pycache__" in path.parts or not (path.is_dir() or path.suffix == ".py"):
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1:] == ["__init__"]
            name = ".".join([prefix, *parts[:-1]] if is_package else [prefix, *parts])
            known.add(name)
            if path.is_file():
                modules[name] = (path, is_package)
        known.add(prefix)
    return modules, known


def resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of `from <level dots><target> import ...` written in `module`."""
    if not level:
        return target or ""
    parts = (module if is_package else module.rpartition(".")[0]).split(".")
    if level - 1 >= len(parts):
        raise ValueError(f"{module}: relative import beyond the top-level package")
    base = parts[: len(parts) - level + 1]
    return ".".join(base + ([target] if target else []))


def imports(module: str, source: str, is_package: bool, known: set[str]) -> list[tuple[int, str, bool]]:
    """(line, imported module, lazy) for every import in source, in order, without duplicates."""
    found: dict[tuple[int, str, bool], None] = {}

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found[(node.lineno, alias.name, lazy)] = None
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found[(node.lineno, sub if sub in known else base, lazy)] = None
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            found[(node.lineno, node.args[0].value, lazy)] = None
        lazy = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, lazy)

    visit(ast.parse(source), False)
    return list(found)


def breaks(module: str, target: str, lazy: bool) -> list[int]:
    """The numbers of the rules that `module` importing `target` (lazily or not) breaks."""
    rules = []
    if _within(module, MODEL) and _within(target, "vfnet") and not _within(target, MODEL):
        rules.append(1)
    if _within(module, RUNTIME) and (
        (not lazy and _within(target, *TORCH))
        or _within(target, APP, EXPORT, TRAIN, ZOO)
        or (_within(target, MODEL) and not (lazy and "torch_backend" in module))
    ):
        rules.append(2)
    if _within(module, APP) and _within(target, MODEL, EXPORT, TRAIN, *TORCH):
        rules.append(3)
    if _within(module, EXPORT) and (
        _within(target, APP)
        or (_within(target, RUNTIME) and not _within(target, f"{RUNTIME}.artifact", f"{RUNTIME}.backends.tensorrt"))
        or (_within(target, ZOO) and not (lazy and module == f"{EXPORT}.cli"))
    ):
        rules.append(4)
    if _within(module, MODEL, RUNTIME) and not lazy and _within(target, PLUGINS):
        rules.append(5)
    if _within(module, ZOO) and (_within(target, APP, RUNTIME, TRAIN) or (not lazy and _within(target, MODEL, EXPORT, *TORCH))):
        rules.append(6)
    if _within(module, PREDICT) and (
        _within(target, APP, MODEL, EXPORT, TRAIN, *TORCH)
        or (_within(target, "ray") and module != f"{PREDICT}.ray_job")
        or (not lazy and _within(target, "av", "pyarrow") and module != f"{PREDICT}.ray_job")
    ):
        rules.append(7)
    if _within(module, RUNTIME, APP, ZOO, EXPORT) and _within(target, PREDICT):
        rules.append(7)
    return rules


def violations(module: str, source: str, *, is_package: bool = False, known: set[str] | None = None) -> list[str]:
    """Human-readable contract violations of `module` whose text is `source`."""
    known = KNOWN if known is None else known
    return [
        f"{module} line {line}: imports {target} {'lazily' if lazy else 'at module level'} (rule {rule})"
        for line, target, lazy in imports(module, source, is_package, known)
        for rule in breaks(module, target, lazy)
    ]


MODULES, KNOWN = discover()


@functools.cache
def tree_violations() -> list[str]:
    return [v for name, (path, is_package) in sorted(MODULES.items()) for v in violations(name, path.read_text(encoding="utf-8"), is_package=is_package)]


def test_walk_found_the_packages():
    counts = {p: sum(_within(m, p) for m in MODULES) for p in (MODEL, RUNTIME, APP, EXPORT, TRAIN)}
    assert all(counts[p] > 5 for p in (MODEL, RUNTIME, APP)), counts
    assert all(counts[p] > 2 for p in (EXPORT, TRAIN)), counts


@pytest.mark.parametrize("rule", [1, 2, 3, 4, 5, 6, 7])
def test_real_tree_keeps_rule(rule):
    found = [v for v in tree_violations() if v.endswith(f"(rule {rule})")]
    assert not found, "\n".join(found)


SYNTHETIC_KNOWN = {
    MODEL,
    f"{MODEL}.head",
    RUNTIME,
    f"{RUNTIME}.artifact",
    f"{RUNTIME}.backends",
    f"{RUNTIME}.backends.tensorrt",
    f"{RUNTIME}.backends.tensorrt.build",
    APP,
    f"{APP}.schemas",
    EXPORT,
    TRAIN,
    PLUGINS,
    ZOO,
    f"{ZOO}.pull",
    PREDICT,
    f"{PREDICT}.local",
    f"{PREDICT}.ray_job",
    "vfnet.server",
}


@pytest.mark.parametrize(
    "module, source, is_package, expected",
    [
        (
            f"{MODEL}.head",
            "from ..server.runtime import x\ndef f():\n    import vfnet.train\nfrom . import layers\n",
            False,
            [f"{MODEL}.head line 1: imports {RUNTIME} at module level (rule 1)", f"{MODEL}.head line 3: imports {TRAIN} lazily (rule 1)"],
        ),
        (
            f"{RUNTIME}.images",
            "try:\n    import torch.nn\nexcept ImportError:\n    pass\ndef f():\n    import torch, torchvision\n",
            False,
            [f"{RUNTIME}.images line 2: imports torch.nn at module level (rule 2)"],
        ),
        (
            f"{RUNTIME}.backends.x",
            "def f():\n    from ...app import x\n    from ... import app\n",
            False,
            [f"{RUNTIME}.backends.x line 2: imports {APP} lazily (rule 2)", f"{RUNTIME}.backends.x line 3: imports {APP} lazily (rule 2)"],
        ),
        (
            f"{RUNTIME}.backends",
            "import vfnet.export.cli\nclass C:\n    from vfnet.train import x\n",
            True,
            [
                f"{RUNTIME}.backends line 1: imports vfnet.export.cli at module level (rule 2)",
                f"{RUNTIME}.backends line 3: imports {TRAIN} at module level (rule 2)",
            ],
        ),
        (
            f"{RUNTIME}.backends.torch_backend",
            "from vfnet.model import head\ndef f():\n    from vfnet.model import head\n",
            False,
            [f"{RUNTIME}.backends.torch_backend line 1: imports {MODEL}.head at module level (rule 2)"],
        ),
        (f"{RUNTIME}.load", "def f():\n    import vfnet.model\n", False, [f"{RUNTIME}.load line 2: imports {MODEL} lazily (rule 2)"]),
        (
            f"{APP}.service",
            "def f():\n    import torchvision.ops\n    from ...model import head\nimport importlib\nimportlib.import_module('vfnet.export')\n",
            False,
            [
                f"{APP}.service line 2: imports torchvision.ops lazily (rule 3)",
                f"{APP}.service line 3: imports {MODEL}.head lazily (rule 3)",
                f"{APP}.service line 5: imports {EXPORT} at module level (rule 3)",
            ],
        ),
        (
            f"{EXPORT}.trt_export",
            "from vfnet.server.runtime import artifact\nfrom vfnet.server.runtime import load_detector\n"
            "from vfnet.server.runtime.backends.tensorrt import build\nfrom ..server.app import schemas\n",
            False,
            [
                f"{EXPORT}.trt_export line 2: imports {RUNTIME} at module level (rule 4)",
                f"{EXPORT}.trt_export line 4: imports {APP}.schemas at module level (rule 4)",
            ],
        ),
        (
            f"{EXPORT}",
            "from vfnet.server import runtime\nimport vfnet.server.runtime.backends.onnxruntime_backend\n",
            True,
            [
                f"{EXPORT} line 1: imports {RUNTIME} at module level (rule 4)",
                f"{EXPORT} line 2: imports {RUNTIME}.backends.onnxruntime_backend at module level (rule 4)",
            ],
        ),
        (
            f"{RUNTIME}.backends.tensorrt.build",
            "from .....trt_plugins import build_report\ndef f():\n    import vfnet.trt_plugins\n",
            False,
            [f"{RUNTIME}.backends.tensorrt.build line 1: imports {PLUGINS} at module level (rule 5)"],
        ),
        (
            f"{MODEL}.layers",
            "from vfnet.trt_plugins import x\n",
            False,
            [f"{MODEL}.layers line 1: imports {PLUGINS} at module level (rule 1)", f"{MODEL}.layers line 1: imports {PLUGINS} at module level (rule 5)"],
        ),
        (f"{TRAIN}.cli", "import torch\nfrom vfnet.server.app import main\nfrom vfnet.model import head\n", False, []),
        (
            f"{ZOO}.pull",
            "import torch\ndef f():\n    from vfnet.model import head\n    import vfnet.server.runtime\nfrom vfnet.export import x\n",
            False,
            [
                f"{ZOO}.pull line 1: imports torch at module level (rule 6)",
                f"{ZOO}.pull line 4: imports {RUNTIME} lazily (rule 6)",
                f"{ZOO}.pull line 5: imports {EXPORT} at module level (rule 6)",
            ],
        ),
        (
            f"{EXPORT}.onnx_export",
            "def f():\n    from vfnet.server.zoo import pull\n",
            False,
            [f"{EXPORT}.onnx_export line 2: imports {ZOO}.pull lazily (rule 4)"],
        ),
        (f"{RUNTIME}.load", "def f():\n    import vfnet.server.zoo\n", False, [f"{RUNTIME}.load line 2: imports {ZOO} lazily (rule 2)"]),
        (
            f"{PREDICT}.local",
            "import pyarrow\ndef f():\n    import av, ray\n    import torch\n    from vfnet.server.app import x\n",
            False,
            [
                f"{PREDICT}.local line 1: imports pyarrow at module level (rule 7)",
                f"{PREDICT}.local line 3: imports ray lazily (rule 7)",
                f"{PREDICT}.local line 4: imports torch lazily (rule 7)",
                f"{PREDICT}.local line 5: imports {APP} lazily (rule 7)",
            ],
        ),
        (f"{PREDICT}.ray_job", "import pyarrow\ndef f():\n    import ray.data\n", False, []),
        (f"{APP}.main", "def f():\n    from vfnet.server.predict import records\n", False, [f"{APP}.main line 2: imports {PREDICT} lazily (rule 7)"]),
    ],
)
def test_checker_catches_synthetic_violations(module, source, is_package, expected):
    assert violations(module, source, is_package=is_package, known=SYNTHETIC_KNOWN) == expected


def test_resolve_relative_imports():
    assert resolve(f"{RUNTIME}.backends.x", False, 3, "app") == APP
    assert resolve(f"{RUNTIME}.backends", True, 1, "x") == f"{RUNTIME}.backends.x"
    assert resolve(f"{RUNTIME}.load", False, 1, None) == RUNTIME
    with pytest.raises(ValueError):
        resolve(f"{MODEL}.head", False, 3, "x")
