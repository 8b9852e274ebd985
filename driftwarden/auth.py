"""Bearer tokens for the reports API: who may read, and which models they may see.

Tokens come from ``$DRIFTWARDEN_API_TOKENS`` and/or the ``api.tokens`` section of a YAML
file (see ``detectors/api/README.md``). A token is either unrestricted or limited to a
list of models and/or tenants; the limit is enforced in SQL by :mod:`driftwarden.detectors.api.queries`
(``model IN {allowed:Array(String)}``), never by filtering rows afterwards.

Presented tokens are compared with every configured token in constant time
(:func:`hmac.compare_digest`, no early exit), and never logged or echoed.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from driftwarden.names import model_name_problem

TOKENS_ENV = "DRIFTWARDEN_API_TOKENS"
INGEST_TOKEN_ENV = "DRIFTWARDEN_INGEST_TOKEN"  # noqa: S105 (the variable's name, not a secret)
COOKIE = "driftwarden_token"


class TokenConfig(BaseModel):
    """One bearer token: a name (shown in logs and pages instead of the secret), the secret, its scope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    token: str = Field(min_length=16, repr=False)
    models: list[str] | None = None  # None: every model
    tenants: list[str] | None = None  # None: every tenant

    @field_validator("token")
    @classmethod
    def _no_blanks(cls, value: str) -> str:
        if value != value.strip() or any(c.isspace() for c in value):
            raise ValueError("a token cannot contain spaces")
        return value

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            problem = model_name_problem(name)
            if problem:
                raise ValueError(f"model {name[:80]!r}: {problem}")
        return value


@dataclass(frozen=True)
class Principal:
    """The caller a token identifies, with the models and tenants it may read (None = all)."""

    name: str
    models: tuple[str, ...] | None = None
    tenants: tuple[str, ...] | None = None

    @property
    def restricted(self) -> bool:
        return self.models is not None or self.tenants is not None


def parse_tokens_env(text: str) -> list[TokenConfig]:
    """Tokens from ``$DRIFTWARDEN_API_TOKENS``.

    Either a JSON list of objects (``[{"name": "alice", "token": "...", "models": ["bikes"]}]``)
    or a comma-separated list of ``name:token[:scope]`` where scope is ``*`` (all, the default),
    ``models=a|b`` or ``tenants=x|y`` (several scopes joined with ``;``).
    Raises ``ValueError`` naming the entry (by position and name, never the secret).
    """
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{TOKENS_ENV} is not valid JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(entries, list):
            raise ValueError(f"{TOKENS_ENV}: expected a JSON list of token objects")
        return [_validated(entry, i) for i, entry in enumerate(entries)]
    out = []
    for i, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, rest = item.partition(":")
        token, _, scope = rest.partition(":")
        if not sep or not name or not token:
            raise ValueError(f"{TOKENS_ENV} entry {i + 1} is not name:token[:scope] (scope: *, models=a|b, tenants=x)")
        entry: dict = {"name": name, "token": token}
        for clause in filter(None, (c.strip() for c in scope.split(";"))):
            if clause == "*":
                continue
            key, eq, values = clause.partition("=")
            if not eq or key not in ("models", "tenants"):
                raise ValueError(
                    f"{TOKENS_ENV} entry {i + 1} ({name}): scope {clause!r} is not *, models=a|b or tenants=x|y"
                )
            entry[key] = [v for v in values.split("|") if v]
        out.append(_validated(entry, i))
    return out


def _validated(entry: object, index: int) -> TokenConfig:
    name = entry.get("name", "?") if isinstance(entry, dict) else "?"
    try:
        return TokenConfig.model_validate(entry)
    except Exception as exc:  # pydantic's message may quote the input: report the field names only
        fields = ", ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in getattr(exc, "errors", list)())
        raise ValueError(f"API token {index + 1} ({name}): {fields or 'expected an object'}") from None


class Authenticator:
    """Checks presented tokens against the configured ones, in constant time."""

    def __init__(self, tokens: Sequence[TokenConfig]) -> None:
        names = [t.name for t in tokens]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"API token names must be unique; repeated: {', '.join(duplicates)}")
        self._tokens = [(t.token.encode(), t) for t in tokens]

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def authenticate(self, presented: str | None) -> Principal | None:
        """The principal of ``presented``, or None. Every configured token is compared, match or not."""
        if not presented:
            return None
        candidate = presented.encode()
        found: TokenConfig | None = None
        for secret, config in self._tokens:
            if hmac.compare_digest(candidate, secret) and found is None:
                found = config
        if found is None:
            return None
        return Principal(
            name=found.name,
            models=tuple(found.models) if found.models is not None else None,
            tenants=tuple(found.tenants) if found.tenants is not None else None,
        )


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def bearer_guard(expected: str | None) -> Callable[..., None]:
    """A FastAPI dependency admitting only ``Authorization: Bearer <expected>`` (everyone when None).

    For the ingest endpoints: collectors hold one ingest token (``$DRIFTWARDEN_INGEST_TOKEN``),
    separate from the read tokens of model owners, so neither can do the other's job.
    """
    secret = expected.encode() if expected else None

    def guard(request: Request) -> None:
        if secret is None:
            return
        presented = bearer(request.headers.get("authorization"))
        if presented is None or not hmac.compare_digest(presented.encode(), secret):
            raise HTTPException(
                401,
                detail="this endpoint needs the ingest token: Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return guard
