"""``driftwarden dashboards``: write the Grafana dashboards as JSON, or push them to a Grafana."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from driftwarden.errors import UserError

TOKEN_ENV = "GRAFANA_TOKEN"  # noqa: S105 (the name of a variable, not a secret)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dashboards",
        help="export the Grafana dashboards as JSON or push them to a Grafana",
        description="The dashboards are Python code (dashboards/); `export` writes their JSON for file "
        "provisioning, `push` uploads them through Grafana's HTTP API.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    export = actions.add_parser(
        "export",
        help="write the dashboards' JSON files",
        description="Write one JSON file per dashboard (and the TypeScript files of the type check when "
        "writing to the default directory). The output is byte-for-byte reproducible.",
    )
    export.add_argument("--out", type=Path, default=None, metavar="DIR", help="directory (default dashboards/json)")
    export.set_defaults(run=run_export)

    push = actions.add_parser(
        "push",
        help="upload the dashboards to a Grafana (idempotent)",
        description="Create the folder when it is missing and upload every dashboard with overwrite, keeping "
        "its uid: pushing twice leaves Grafana as pushing once. The datasources are referenced by the uids "
        "driftwarden-clickhouse and driftwarden-prometheus (see dashboards/provisioning/datasources).",
    )
    push.add_argument("--grafana-url", required=True, metavar="URL", help="e.g. http://grafana.internal:3000")
    push.add_argument(
        "--token",
        default=None,
        metavar="T",
        help=f"service account token with the Editor role (default ${TOKEN_ENV}; or put user:password in the URL)",
    )
    push.add_argument("--folder", default="driftwarden", metavar="NAME", help="folder title (default driftwarden)")
    push.set_defaults(run=run_push)


def run_export(args: argparse.Namespace) -> int:
    from driftwarden.dashboards import render

    if args.out is None:
        written = render.export()
    else:
        if args.out.exists() and not args.out.is_dir():
            raise UserError(f"--out {args.out} exists and is not a directory: pass a directory")
        written = render.export(args.out)
    for path in written:
        print(path)
    return 0


def folder_uid(title: str) -> str:
    """A stable folder uid for a folder title (Grafana uids: at most 40 of [A-Za-z0-9_-])."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", title.strip()).strip("-").lower()
    return slug[:40] or "driftwarden"


def run_push(args: argparse.Namespace) -> int:
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

    from driftwarden.dashboards import render

    if not re.match(r"^https?://[^/]", args.grafana_url):
        raise UserError(f"--grafana-url {args.grafana_url!r} is not an http(s) URL, e.g. http://grafana:3000")
    if not args.folder.strip():
        raise UserError("--folder is empty: give the title of the folder to put the dashboards in")
    token = args.token or os.environ.get(TOKEN_ENV) or None
    api = GrafanaApi.from_url(args.grafana_url, credential=token)
    where = args.grafana_url.split("@")[-1]
    try:
        uid = _ensure_folder(api, args.folder)
        for name in render.names():
            board = render.model(name)
            result = api.dashboard.update_dashboard(
                {"dashboard": board, "folderUid": uid, "overwrite": True, "message": "driftwarden dashboards push"}
            )
            print(f"{board['title']}: {result.get('status', 'success')} ({result.get('url', board['uid'])})")
    except GrafanaUnauthorizedError:
        raise UserError(
            f"Grafana at {where} refused the credentials: pass --token (or ${TOKEN_ENV}) with a service account "
            "token that has the Editor role, or put user:password in the URL"
        ) from None
    except GrafanaClientError as exc:
        raise UserError(f"Grafana at {where} rejected the upload: {exc}") from None
    except GrafanaException as exc:
        raise UserError(f"Grafana at {where} failed: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot reach Grafana at {where}: {exc}; check --grafana-url") from None
    except Exception as exc:  # niquests' connection errors do not derive from OSError
        if type(exc).__module__.startswith(("niquests", "urllib3")):
            raise UserError(f"cannot reach Grafana at {where}: {exc}; check --grafana-url") from None
        raise
    return 0


def _ensure_folder(api, title: str) -> str:
    """The uid of the folder titled ``title``, created when missing."""
    for folder in api.folder.get_all_folders():
        if folder.get("title") == title:
            return folder["uid"]
    created = api.folder.create_folder(title, uid=folder_uid(title))
    print(f"created folder {title!r}")
    return created["uid"]
