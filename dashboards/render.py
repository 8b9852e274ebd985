"""Deterministic output of the dashboards: JSON for Grafana, TypeScript for the type check.

The JSON in ``dashboards/json/`` is committed; the TypeScript is written by
:func:`write_typecheck` into a scratch folder when the type check runs, never committed.

The same code always produces the same bytes (sorted keys, fixed uids, panel ids in layout
order, no timestamps or versions), so a test can compare the committed JSON with what the
code generates and a diff in review shows exactly what changed on screen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

PACKAGE_DIR = Path(__file__).resolve().parent
JSON_DIR = PACKAGE_DIR / "json"
TYPECHECK_DIR = PACKAGE_DIR / "typecheck"  # tsconfig, the DashboardJson type and node_modules (@grafana/schema)


def _registry() -> dict[str, Callable[[], Dashboard]]:
    from driftwarden.dashboards import drift, llm_overview, reproducibility, sre_overview

    return {
        "sre-overview": sre_overview.build,
        "drift": drift.build,
        "reproducibility": reproducibility.build,
        "llm-overview": llm_overview.build,
    }


def names() -> list[str]:
    """File stems of the dashboards, in a stable order."""
    return list(_registry())


def model(name: str) -> dict:
    """The dashboard ``name`` as the JSON object Grafana stores."""
    board = _registry()[name]()
    data = json.loads(json.dumps(board, cls=JSONEncoder))
    _number_panels(data.get("panels", []))
    for variable in data.get("templating", {}).get("list", []):
        if variable.get("type") != "interval":
            # The SDK writes the interval-only keys on every variable; Grafana's schema has no such keys.
            for key in ("auto", "auto_min", "auto_count"):
                variable.pop(key, None)
    return data


def _number_panels(panels: list[dict]) -> None:
    """Give panels ids 1..n in layout order; Grafana needs unique ids for links and repeats."""
    counter = 0

    def walk(items: list[dict]) -> None:
        nonlocal counter
        for panel in items:
            counter += 1
            panel["id"] = counter
            walk(panel.get("panels", []))

    walk(panels)


def to_json(name: str) -> str:
    """The dashboard's JSON text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(model(name), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def to_typescript(name: str) -> str:
    """A TypeScript module that holds the dashboard as a literal checked against ``Dashboard``.

    A literal (rather than ``import ... from './x.json'``) keeps string-literal unions and
    excess-property checks: TypeScript widens imported JSON to plain ``string``.
    """
    body = json.dumps(model(name), indent=2, sort_keys=True, ensure_ascii=False)
    return (
        f"// Generated for the type check from dashboards/{_module(name)}.py: do not edit.\n"
        "import type { DashboardJson } from './dashboard-json';\n\n"
        f"const dashboard = {body} satisfies DashboardJson;\n\n"
        "export default dashboard;\n"
    )


def _module(name: str) -> str:
    return name.replace("-", "_")


def outputs(json_dir: Path = JSON_DIR) -> dict[Path, str]:
    """Every committed generated file (the dashboards' JSON) and its content."""
    return {json_dir / f"{name}.json": to_json(name) for name in names()}


def export(out_dir: Path = JSON_DIR) -> list[Path]:
    """Write the dashboards' JSON files; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in outputs(out_dir).items():
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def write_typecheck(into: Path, typecheck_dir: Path = TYPECHECK_DIR) -> Path:
    """Lay out a TypeScript project in ``into`` that type-checks every dashboard; return it.

    It holds the committed ``tsconfig.json`` and ``dashboard-json.ts``, a link to the installed
    ``node_modules`` and one generated ``NAME.ts`` per dashboard; ``tsc --noEmit -p into`` checks it.
    """
    into.mkdir(parents=True, exist_ok=True)
    for name in ("tsconfig.json", "dashboard-json.ts"):
        (into / name).write_text((typecheck_dir / name).read_text(encoding="utf-8"), encoding="utf-8")
    modules = into / "node_modules"
    if not modules.exists():
        modules.symlink_to(typecheck_dir / "node_modules")
    for name in names():
        (into / f"{name}.ts").write_text(to_typescript(name), encoding="utf-8")
    return into
