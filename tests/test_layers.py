"""The layers point one way (ARCHITECTURE.md): every import of every module, lazy ones included.

Foundation (``wavefront/__init__``, ``errors``, ``utils`` and the other non-command modules of
``wavefront/``) < ``sim`` < ``datasets`` < ``estimators``; ``imaging`` beside them, on the
foundation alone; the commands (every ``cli.py`` and ``pilot_cli.py``, ``wavefront/cli.py``,
``resolve``, ``merge``, ``__main__``) on top, free to import anything. A module may import its
own layer and the layers below it, never one above or beside it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"wavefront": "wavefront", "sim": "wavefront.sim", "datasets": "wavefront.datasets",
           "estimators": "wavefront.estimators", "imaging": "wavefront.imaging"}
COMMAND_MODULES = {"cli", "pilot_cli", "resolve", "merge", "__main__"}
# what each layer may import (besides itself)
ALLOWED = {
    "foundation": {"foundation"},
    "sim": {"foundation", "sim"},
    "datasets": {"foundation", "sim", "datasets"},
    "estimators": {"foundation", "sim", "datasets", "estimators"},
    "imaging": {"foundation", "imaging"},
    "command": {"foundation", "sim", "datasets", "estimators", "imaging", "command"},
}


def layer_of(module: str) -> str | None:
    """Returns the layer of a dotted module name inside ``wavefront`` (None outside it)."""
    parts = module.split(".")
    if parts[0] != "wavefront":
        return None
    rest = parts[1:]
    if rest and rest[0] in ("sim", "datasets", "estimators", "imaging"):
        if len(rest) > 1 and rest[1] in COMMAND_MODULES:
            return "command"
        return rest[0]
    if rest and rest[0] in COMMAND_MODULES:
        return "command"
    return "foundation"


def module_files():
    """Yields ``(dotted module name, path)`` for every module of the package."""
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).glob("*.py")):
            yield (package if path.stem == "__init__" else f"{package}.{path.stem}"), path


def imported_modules(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """Returns ``(line, dotted name)`` of every import in ``tree`` (function bodies included), relative ones resolved."""
    found = []
    package = module if module in FOLDERS.values() else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from wavefront import cli" names a module; "from wavefront.sim.x import f" names x
            found += [(node.lineno, f"{base}.{a.name}" if layer_of(f"{base}.{a.name}") == "command" else base)
                      for a in node.names]
    return found


def upward_imports(sources: dict[str, str]) -> list[str]:
    """Returns one line per import that points up or sideways, for ``{module: source text}``."""
    bad = []
    for module, text in sources.items():
        me = layer_of(module)
        for line, name in imported_modules(ast.parse(text), module):
            other = layer_of(name)
            if other is not None and other not in ALLOWED[me]:
                bad.append(f"{module}:{line} ({me}) imports {name} ({other})")
    return bad


def test_no_module_imports_a_layer_above_or_beside_it():
    sources = {m: p.read_text() for m, p in module_files()}
    assert len(sources) > 50 and {m.split(".")[1] for m in sources if "." in m} >= set(FOLDERS) - {"wavefront"}
    assert upward_imports(sources) == []


@pytest.mark.parametrize("module,line,layer", [
    ("wavefront.sim.frames", "    from wavefront.estimators.registry import create\n", "estimators"),
    ("wavefront.sim.lmmse", "from wavefront.resolve import resolve_estimators\n", "command"),
    ("wavefront.datasets.shards", "    from wavefront.estimators import train\n", "estimators"),
    ("wavefront.datasets.generate", "from wavefront.sim import cli\n", "command"),
    ("wavefront.estimators.train", "    from wavefront.imaging.wave import WaveFrontEnd\n", "imaging"),
    ("wavefront.imaging.codesign", "from wavefront.sim.frames import FrameGenerator\n", "sim"),
    ("wavefront.utils", "    from wavefront.sim.config import SystemConfig\n", "sim"),
])
def test_an_injected_upward_import_is_found(module, line, layer):
    sources = {m: p.read_text() for m, p in module_files()}
    text = sources[module]
    # inject inside the first function when the line is indented (a lazy import), else at the top
    if line.startswith(" "):
        head, sep, tail = text.partition("\ndef ")
        body_start = tail.index(":\n") + 2
        tail = tail[:body_start] + line + tail[body_start:]
        sources[module] = head + sep + tail
    else:
        sources[module] = line + text
    bad = upward_imports(sources)
    assert len(bad) == 1 and bad[0].startswith(module) and f"({layer})" in bad[0], bad
