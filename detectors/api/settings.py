"""Configuration of the reports API: tokens, report sample size and seed, the report cache directory.

Read from the ``api:`` section of a YAML file (``--api-config`` or ``$DRIFTWARDEN_API_CONFIG``)
plus tokens from ``$DRIFTWARDEN_API_TOKENS``; validated with pydantic, a bad value named by
its key. Example::

    api:
      report_sample_size: 5000
      report_seed: 0
      report_cache_dir: /var/cache/driftwarden/reports
      alertmanager_url: http://alertmanager:9093   # firing alerts join each model's health (or prometheus_url)
      tokens:
        - {name: ops, token: "<32 random characters>"}
        - {name: bikes-team, token: "<...>", models: [bikes]}
        - {name: acme, token: "<...>", tenants: [acme]}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftwarden.auth import TOKENS_ENV, TokenConfig, parse_tokens_env
from driftwarden.errors import UserError

CONFIG_ENV = "DRIFTWARDEN_API_CONFIG"
CACHE_ENV = "DRIFTWARDEN_REPORT_CACHE"
ALERTMANAGER_ENV = "DRIFTWARDEN_ALERTMANAGER_URL"  # api.alertmanager_url when the file does not set it
DEFAULT_CACHE_DIR = "driftwarden-reports"


class ApiSettings(BaseModel):
    """What the reports API needs beyond the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[TokenConfig] = []
    report_sample_size: int = Field(default=5000, ge=10, le=200_000)  # rows per window given to Evidently
    report_seed: int = Field(default=0, ge=0)  # the sample is a function of (event ids, seed): reproducible
    report_cache_dir: str = DEFAULT_CACHE_DIR
    history_windows: int = Field(default=24, ge=2, le=1000)  # windows shown in sparklines and histories
    # the firing alerts of a model join its health (detectors/health.py): an Alertmanager, else a Prometheus
    alertmanager_url: str | None = Field(default=None, pattern=r"^https?://")
    prometheus_url: str | None = Field(default=None, pattern=r"^https?://")
    alerts_timeout_s: float = Field(default=1.0, gt=0, le=10)  # the page does not wait longer on them


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ApiSettings:
    """Settings from the YAML file ``path`` (else ``$DRIFTWARDEN_API_CONFIG``) plus tokens from the environment.

    Raises :class:`UserError` naming the key and the accepted values; a secret is never quoted.
    """
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    data: dict = {}
    if path:
        data = _read_section(Path(path))
    data = with_environment(data, env)
    try:
        extra = parse_tokens_env(env.get(TOKENS_ENV, ""))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    source = str(path) if path else "API settings"
    try:
        settings = ApiSettings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = "api." + ".".join(map(str, err["loc"]))
            shown = "" if "token" in key else f"value {err.get('input')!r} is not accepted: "
            problems.append(f"{key}: {shown}{err['msg']}")
        raise UserError(f"{source}: " + "; ".join(problems)) from None
    if extra:
        settings = settings.model_copy(update={"tokens": [*settings.tokens, *extra]})
    return settings


def _read_section(path: Path) -> dict:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"API configuration file {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read the API configuration file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UserError(
            f"the API configuration file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    section = (document or {}).get("api") if isinstance(document, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise UserError(f"{path}: api: expected a mapping (tokens, report_sample_size, ...)")
    return dict(section)


def with_environment(data: dict, env: Mapping[str, str]) -> dict:
    """The ``api:`` settings ``data`` with what the environment sets where the file is silent.

    ``DRIFTWARDEN_REPORT_CACHE`` is ``report_cache_dir`` and ``DRIFTWARDEN_ALERTMANAGER_URL`` is
    ``alertmanager_url``; ``driftwarden api`` and ``driftwarden up`` read them alike.
    """
    data = dict(data)
    if CACHE_ENV in env and "report_cache_dir" not in data:
        data["report_cache_dir"] = env[CACHE_ENV]
    if env.get(ALERTMANAGER_ENV) and "alertmanager_url" not in data:
        data["alertmanager_url"] = env[ALERTMANAGER_ENV]
    return data
