"""The package's architecture and conventions, checked on its source.

- Core (top-level modules, ``models/``, ``data/``) imports nothing from the experiments or the
  teaching UI (``experiments/``, ``widgets/``, ``exercises/``, ``course/``, ``viz``).
- Nothing in the library reseeds PyTorch's global RNG except ``config`` (``seed_everything``,
  ``seeded``).
- Public functions take at most ``MAX_POSITIONAL`` positional parameters; options after the data
  arguments are keyword-only.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "csm_edu"
UPPER = ("experiments", "widgets", "exercises", "course", "viz")
MAX_POSITIONAL = 4


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _room(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    top = rel[0].removesuffix(".py")
    return "upper" if top in UPPER else "core"


def _imported_modules(path: Path):
    tree = ast.parse(path.read_text())
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            mod = base + (node.module.split(".") if node.module else [])
            names = [a.name for a in node.names]
            yield ".".join(mod), names
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


@pytest.mark.parametrize("path", [p for p in _modules() if _room(p) == "core"], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_imports_nothing_from_the_upper_rooms(path):
    for module, names in _imported_modules(path):
        parts = module.split(".")
        targets = [parts[1]] if len(parts) > 1 and parts[0] == "csm_edu" else []
        if module == "csm_edu":
            targets = names
        bad = [t for t in targets if t in UPPER]
        assert not bad, f"{path.relative_to(PACKAGE)} (core) imports {module} {names}: move the code or invert the call"


def test_no_global_reseeding_in_the_library():
    offenders = []
    for path in _modules():
        if path.name == "config.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("manual_seed", "seed") \
                    and isinstance(node.func.value, (ast.Name, ast.Attribute)) \
                    and getattr(node.func.value, "id", getattr(node.func.value, "attr", "")) in ("torch", "random", "np", "cuda"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, f"global RNG reseeded at {offenders}; take a generator or use config.seeded(seed)"


def _public_functions():
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                yield path, node


def test_options_are_keyword_only():
    too_many = []
    for path, fn in _public_functions():
        positional = [a.arg for a in fn.args.posonlyargs + fn.args.args if a.arg not in ("self", "cls")]
        if positional[:1] == ["ctx"]:
            continue  # torch.autograd.Function.forward/backward: PyTorch passes every input positionally
        if len(positional) > MAX_POSITIONAL:
            too_many.append(f"{path.relative_to(PACKAGE)}:{fn.lineno} {fn.name}({', '.join(positional)})")
    assert not too_many, "make the options keyword-only (add `*` after the data arguments):\n" + "\n".join(too_many)
