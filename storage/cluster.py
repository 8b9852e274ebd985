"""Rendering of single-node DDL for a ClickHouse cluster.

Each ``CREATE TABLE x (...) ENGINE = <Kind>MergeTree(args)`` becomes

* ``x_local ON CLUSTER c`` with
  ``Replicated<Kind>MergeTree('/clickhouse/tables/{shard}/{database}/x_local', '{replica}', args)``;
* ``x ON CLUSTER c AS x_local ENGINE = Distributed(c, currentDatabase(), x_local, key)``,
  where ``key`` comes from a ``-- shard by: expr`` comment in the statement
  (``rand()`` when absent). Tables that deduplicate by event id shard by it, so
  that every copy of an event lands on the same shard and is merged away there.

``ALTER TABLE x`` runs on the local tables, and also on the Distributed ones
when it changes columns. Anything else is refused: a migration that cannot be
rendered for a cluster is a bug to fix in the migration, not at deploy time.
"""

from __future__ import annotations

import re

_CREATE = re.compile(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+`?(\w+)`?", re.IGNORECASE)
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*?)MergeTree\b(?:\s*\(([^)]*)\))?", re.IGNORECASE)
_SHARD = re.compile(r"^\s*--\s*shard by:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_ALTER = re.compile(r"ALTER\s+TABLE\s+`?(\w+)`?\s+(.*)", re.IGNORECASE | re.DOTALL)
_COLUMN_CHANGE = re.compile(r"^\s*(ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", re.IGNORECASE)


class ClusterRenderError(ValueError):
    """A statement has no cluster form."""


def quote(name: str) -> str:
    """A cluster name as a ClickHouse identifier."""
    return "`" + name.replace("`", "``") + "`"


def render(statement: str, cluster: str) -> list[str]:
    """The cluster form of one single-node statement, as one or more statements."""
    on = f"ON CLUSTER {quote(cluster)}"
    create = _CREATE.search(statement)
    if create:
        name = create.group(1)
        local = f"{name}_local"
        engine = _ENGINE.search(statement)
        if not engine:
            raise ClusterRenderError(f"CREATE TABLE {name}: only MergeTree-family engines can be replicated")
        kind, args = engine.group(1), (engine.group(2) or "").strip()
        replicated_args = f"'/clickhouse/tables/{{shard}}/{{database}}/{local}', '{{replica}}'"
        if args:
            replicated_args += f", {args}"
        body = statement[: create.start()] + f"CREATE TABLE IF NOT EXISTS {local} {on}" + statement[create.end() :]
        body = _ENGINE.sub(lambda _m: f"ENGINE = Replicated{kind}MergeTree({replicated_args})", body, count=1)
        shard = _SHARD.search(statement)
        key = shard.group(1).strip() if shard else "rand()"
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {name} {on} AS {local} "
            f"ENGINE = Distributed({quote(cluster)}, currentDatabase(), {local}, {key})"
        )
        return [body, distributed]
    alter = _ALTER.search(statement)
    if alter:
        name, action = alter.group(1), alter.group(2)
        head = statement[: alter.start()]
        out = [f"{head}ALTER TABLE {name}_local {on} {action}"]
        if _COLUMN_CHANGE.match(action):
            out.append(f"ALTER TABLE {name} {on} {action}")
        return out
    raise ClusterRenderError(f"no cluster form for statement: {statement.strip()[:80]}")
