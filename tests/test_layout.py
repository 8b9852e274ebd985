"""The house has one direction and one namespace.

Imports point downward: the command line and ``up`` on top, then the collector and the
detectors (the collector never imports the detectors), then the dashboards, then the store,
then the shared bottom (``driftwarden.errors``, ``.version``, ``.auth``, ``.names``, ``.lazy``). The installed
distribution holds one top-level import package, ``driftwarden``.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {  # import prefix -> folder in the repository
    "driftwarden.collector": ROOT / "collector",
    "driftwarden.detectors": ROOT / "detectors",
    "driftwarden.dashboards": ROOT / "dashboards",
    "driftwarden.storage": ROOT / "storage",
    "driftwarden": ROOT / "driftwarden",
}
BOTTOM = {
    "driftwarden",
    "driftwarden.errors",
    "driftwarden.version",
    "driftwarden.auth",
    "driftwarden.names",
    "driftwarden.lazy",
}
# A layer may import its own layer and every layer below it; lower number = lower layer.
LAYERS = [
    ("driftwarden.storage", 1),
    ("driftwarden.dashboards", 2),
    ("driftwarden.collector", 3),
    ("driftwarden.detectors", 3),
]
TOP = 4


def _layer(module: str) -> int:
    """The layer of a module, or of a name imported from it (``driftwarden.errors.UserError``)."""
    if module in BOTTOM or any(module.startswith(f"{bottom}.") for bottom in BOTTOM - {"driftwarden"}):
        return 0
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return TOP


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([prefix, *parts])
            found.setdefault(name, path)
    return found


def _imports(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.append(target)
            # `from driftwarden import storage` imports the subpackage driftwarden.storage
            names += [f"{target}.{alias.name}" for alias in node.names]
    return names


MODULES = _modules()


def test_the_layout_finds_every_layer():
    assert {
        "driftwarden.storage.migrate",
        "driftwarden.collector.proxy",
        "driftwarden.detectors.api.routes",
        "driftwarden.dashboards.render",
        "driftwarden.cli",
        "driftwarden.errors",
    } <= set(MODULES)
    assert _layer("driftwarden.storage.url") == 1 and _layer("driftwarden.cli") == TOP
    assert _layer("driftwarden.errors") == 0


def test_no_module_imports_the_old_top_level_packages():
    scripts = {
        f"{path.parent.name}.{path.stem}": path
        for folder in ("tests", "bench", "deploy", "scripts", "examples")
        for path in (ROOT / folder).rglob("*.py")
    }
    offenders = []
    for module, path in {**MODULES, **scripts}.items():
        for name in _imports(path, module):
            if name.split(".")[0] in {"collector", "detectors", "storage", "dashboards", "alerts"}:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "import them as driftwarden.X:\n" + "\n".join(offenders)


def test_imports_point_downward_only():
    upward = []
    for module, path in MODULES.items():
        mine = _layer(module)
        for name in _imports(path, module):
            if name.startswith("driftwarden") and _layer(name) > mine:
                upward.append(f"{module} imports {name}")
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_the_collector_never_imports_the_detectors():
    crossing = [
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if module.startswith("driftwarden.collector")
        for name in _imports(path, module)
        if name.startswith("driftwarden.detectors")
    ]
    assert not crossing, "\n".join(crossing)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The direction check can fail: a storage module that imports the detectors is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from driftwarden.detectors.window import Window\nfrom . import migrate\n")
    names = _imports(bad, "driftwarden.storage.bad")
    assert "driftwarden.detectors.window" in names and "driftwarden.storage.migrate" in names
    assert _layer("driftwarden.detectors.window") > _layer("driftwarden.storage.bad")


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package(tmp_path):
    source = tmp_path / "source"  # setuptools writes build/ beside the sources: build a copy
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", ".stamps", "node_modules", "build", "driftwarden-data*"),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("driftwarden-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"driftwarden"}, f"the wheel installs {sorted(top)} at the top of site-packages"
    # every source module of the repository is in the wheel, under driftwarden/
    expected = {
        str(p.relative_to(ROOT))
        for folder in SOURCES.values()
        for p in folder.rglob("*.py")
        if "node_modules" not in p.parts
    }
    packaged = {
        name.removeprefix("driftwarden/")
        if name.split("/")[1] in {"collector", "detectors", "dashboards", "storage"}
        else name
        for name in names
        if name.endswith(".py")
    }
    assert expected <= packaged, f"missing from the wheel: {sorted(expected - packaged)}"
    assert "driftwarden/storage/migrations/0001_initial.sql" in names
    assert "driftwarden/detectors/api/templates/model.html" in names or any(
        n.startswith("driftwarden/detectors/api/templates/") for n in names
    )
