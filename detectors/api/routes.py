"""The reports router: JSON API under ``/api/v1`` and the model owners' pages, behind bearer tokens.

Add it to the hub's FastAPI app (which holds the store client in ``app.state.store``)::

    from driftwarden.detectors.api import create_router, load_settings
    app.include_router(create_router(load_settings()))

Every route here requires a token (``Authorization: Bearer TOKEN``, or the HttpOnly cookie set
by ``/login``) except ``/login``, ``/logout`` and ``/static/*``. JSON routes answer 401 without
one; pages answer 401 with the login form. A model outside the token's scope answers 404, like
a model that does not exist, so scopes do not reveal which models exist.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Security
from fastapi import Path as PathParameter
from fastapi.dependencies.utils import get_flat_dependant
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPBearer

from driftwarden.auth import COOKIE, Authenticator, Principal, bearer
from driftwarden.detectors.api import (
    analytics_queries,
    analytics_schemas,
    analytics_section,
    estimation_section,
    health_section,
    llm_schemas,
    llm_section,
    pages,
    queries,
    schemas,
)
from driftwarden.detectors.api.reports import NoData, build_report
from driftwarden.detectors.api.settings import ApiSettings
from driftwarden.detectors.window import Window
from driftwarden.errors import UserError
from driftwarden.names import model_name_problem

logger = logging.getLogger("driftwarden.api")
STATIC = Path(__file__).with_name("static")
STATIC_FILES = {"driftwarden.css": "text/css; charset=utf-8"}
WINDOW_HELP = "START..END in ISO 8601 (UTC when no zone), e.g. 2011-02-01..2011-03-01"
# Our pages run no script and load only same-origin styles; the Evidently report needs its inline bundle.
PAGE_CSP = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
    "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
)
REPORT_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; base-uri 'none'"
)
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "private"}

# What the JSON API documents besides its answers: the token it needs and the errors it gives.
BEARER = HTTPBearer(auto_error=False, description="an API token of $DRIFTWARDEN_API_TOKENS or api.tokens")
ERRORS: dict[int | str, dict] = {
    401: {"model": schemas.Problem, "description": "no valid API token"},
    404: {"model": schemas.Problem, "description": "no such model visible to this token, or no data"},
    422: {"model": schemas.Problem, "description": "a parameter is not valid; the detail says which and why"},
}

ModelPath = Annotated[
    str,
    PathParameter(
        description="the model's name as the collector or ingest recorded it, e.g. org/model-name:tag "
        "(percent-encoded; '/' and ':' may stay as they are)"
    ),
]
WindowQuery = Annotated[
    str | None,
    Query(description=f"only results whose analysed window lies inside this range: {WINDOW_HELP}"),
]


def parse_window(text: str | None, name: str, *, required: bool = False) -> Window | None:
    """A ``START..END`` query parameter as a Window; HTTP 422 with the reason when it is not one."""
    if text is None or not text.strip():
        if required:
            raise HTTPException(422, detail=f"query parameter {name!r} is required: {WINDOW_HELP}")
        return None
    try:
        return Window.parse(text, name=name)
    except UserError as exc:
        raise HTTPException(422, detail=f"{exc} ({WINDOW_HELP})") from None


def create_router(settings: ApiSettings | None = None) -> APIRouter:
    """The JSON API and pages over ``request.app.state.store``, with ``settings`` (tokens, report options)."""
    settings = settings or ApiSettings()
    authenticator = Authenticator(settings.tokens)
    if not authenticator.configured:
        logger.warning("no API tokens are configured: every request to the reports API will get 401")
    router = APIRouter()

    def store(request: Request):
        return request.app.state.store

    def identify(request: Request) -> Principal | None:
        token = bearer(request.headers.get("authorization")) or request.cookies.get(COOKIE)
        return authenticator.authenticate(token)

    def require(request: Request, _documented: object = Security(BEARER)) -> Principal:
        principal = identify(request)
        if principal is None:
            detail = (
                "a valid API token is required: send Authorization: Bearer TOKEN"
                if authenticator.configured
                else "this service has no API tokens configured: the operator sets them in "
                "$DRIFTWARDEN_API_TOKENS or the api.tokens configuration section"
            )
            raise HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})
        return principal

    taken: dict[int, frozenset[str]] = {}  # query parameters of each route, by id of the route

    def known_query(request: Request, _principal: Principal = Depends(require)) -> None:
        """422 naming the query parameters a route does not take: a misspelt filter must not be ignored."""
        route = request.scope.get("route")
        if route is None:
            return
        if id(route) not in taken:
            taken[id(route)] = frozenset(p.alias for p in get_flat_dependant(route.dependant).query_params)
        unknown = sorted(set(request.query_params) - taken[id(route)])
        if unknown:
            accepted = ", ".join(sorted(taken[id(route)])) or "none"
            raise HTTPException(
                422, detail=f"unknown query parameter(s) {', '.join(map(repr, unknown))}; this route takes: {accepted}"
            )

    def visible(client, principal: Principal, model: str) -> None:
        problem = model_name_problem(model)
        if problem:  # ingest refuses such a name, so no model has it
            raise HTTPException(404, detail=f"model {model[:300]!r} not found: no model can have this name: {problem}")
        if not queries.model_visible(client, principal, model):
            raise HTTPException(
                404, detail=f"model {model!r} not found: no events or results of it are visible to this token"
            )

    # -- JSON API ---------------------------------------------------------------------------------

    api = APIRouter(prefix="/api/v1", tags=["reports"], responses=ERRORS, dependencies=[Depends(known_query)])

    @api.get("/models", response_model=list[schemas.ModelVersion], summary="Models and versions with events")
    def list_models(request: Request, principal: Principal = Depends(require)) -> list[dict]:
        return queries.list_models(store(request), principal)

    @api.get("/status", response_model=list[schemas.ModelStatus], summary="Each model's status at a glance")
    def status(request: Request, principal: Principal = Depends(require)) -> list[dict]:
        return _statuses(store(request), principal)

    @api.get(
        "/models/{model:path}/drift",
        response_model=schemas.DriftStatus,
        summary="Latest drift status per feature, prediction and dataset",
    )
    def drift(
        request: Request, model: ModelPath, principal: Principal = Depends(require), window: WindowQuery = None
    ) -> dict:
        within = parse_window(window, "window")
        client = store(request)
        visible(client, principal, model)
        return _drift_status(model, queries.latest_drift(client, principal, model, within))

    @api.get(
        "/models/{model:path}/drift/history",
        response_model=list[schemas.DriftPoint],
        summary="Drift per analysed window, oldest first",
    )
    def drift_history(
        request: Request,
        model: ModelPath,
        principal: Principal = Depends(require),
        window: WindowQuery = None,
        feature: Annotated[str | None, Query(description="one feature (all when absent)")] = None,
        target: Annotated[str | None, Query(pattern="^(feature|prediction|dataset)$")] = None,
    ) -> list[dict]:
        within = parse_window(window, "window")
        client = store(request)
        visible(client, principal, model)
        rows = queries.drift_history(client, principal, model, within, feature)
        return [r for r in rows if target is None or r["target"] == target]

    @api.get(
        "/models/{model:path}/performance",
        response_model=list[schemas.PerformancePoint],
        summary="Quality metrics per window where ground truth exists",
    )
    def performance(
        request: Request, model: ModelPath, principal: Principal = Depends(require), window: WindowQuery = None
    ) -> list[dict]:
        within = parse_window(window, "window")
        client = store(request)
        visible(client, principal, model)
        return queries.performance(client, principal, model, within)

    @api.get("/models/{model:path}/latency", response_model=schemas.Latency, summary="Latency, errors and SLO")
    def latency(
        request: Request, model: ModelPath, principal: Principal = Depends(require), window: WindowQuery = None
    ) -> dict:
        within = parse_window(window, "window")
        client = store(request)
        visible(client, principal, model)
        return {
            "summary": _with_slo_met(queries.latency_summary(client, principal, model, within)),
            "windows": queries.latency(client, principal, model, within),
        }

    @api.get(
        "/models/{model:path}/llm",
        response_model=llm_schemas.LLMFigures,
        summary="A language model's tokens, cost, TTFT and latency over time, finish reasons, notable calls",
    )
    def llm(
        request: Request,
        model: ModelPath,
        principal: Principal = Depends(require),
        window: Annotated[
            str | None,
            Query(description=f"calls that start in this range (default: the 7 days up to the latest): {WINDOW_HELP}"),
        ] = None,
    ) -> dict:
        within = parse_window(window, "window")
        client = store(request)
        visible(client, principal, model)
        found = llm_section.figures(client, principal, model, within)
        if found is None:
            raise HTTPException(
                404,
                detail=f"model {model!r} has no language-model calls (tokens or gen_ai fields) visible to this token",
            )
        return found

    def windowed(name: str, response_model, summary: str, read) -> None:
        """``GET /models/{model}/NAME?window=``: the stored results of ``read`` per window, for a visible model."""

        def route(
            request: Request, model: ModelPath, principal: Principal = Depends(require), window: WindowQuery = None
        ) -> list[dict]:
            within = parse_window(window, "window")
            client = store(request)
            visible(client, principal, model)
            return read(client, principal, model, within)

        route.__name__ = name
        api.get(f"/models/{{model:path}}/{name}", response_model=response_model, summary=summary)(route)

    windowed(
        "reproducibility",
        list[schemas.ReproducibilityPoint],
        "Consistency and replay results per window",
        queries.reproducibility,
    )
    windowed(
        "multivariate",
        list[analytics_schemas.MultivariatePoint],
        "Multivariate drift (PCA reconstruction, domain classifier) per window, with its drivers",
        analytics_queries.multivariate,
    )
    windowed(
        "quality",
        list[analytics_schemas.QualityPoint],
        "Data-quality checks per window: missing values, types, ranges, categories, schema, malformed rows",
        analytics_queries.quality,
    )
    windowed(
        "segments",
        list[analytics_schemas.SegmentPoint],
        "Drift, performance and latency per segment, ranked by degradation",
        analytics_queries.segments,
    )

    @api.get(
        "/models/{model:path}/runs",
        response_model=list[schemas.DetectorRun],
        summary="Detector runs, newest first, with their errors",
    )
    def detector_runs(
        request: Request,
        model: ModelPath,
        principal: Principal = Depends(require),
        window: WindowQuery = None,
        status: Annotated[str | None, Query(pattern="^(ok|error|skipped)$")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    ) -> list[dict]:
        within = parse_window(window, "window")
        client = store(request)
        visible(client, principal, model)
        return queries.runs(client, principal, model, within, status, limit)

    @api.get(
        "/models/{model:path}/report",
        response_model=schemas.ReportProvenance,
        summary="Generate (or reuse) the Evidently report of two windows; its provenance",
    )
    def report_provenance(
        request: Request,
        model: ModelPath,
        reference: Annotated[str, Query(description=f"reference window: {WINDOW_HELP}")],
        current: Annotated[str, Query(description=f"current window: {WINDOW_HELP}")],
        principal: Principal = Depends(require),
    ) -> dict:
        ref, cur = _report_windows(reference, current)
        client = store(request)
        visible(client, principal, model)
        try:
            return _build(client, principal, model, ref, cur).provenance
        except NoData as exc:
            raise HTTPException(404, detail=str(exc)) from None

    router.include_router(api)

    # -- pages ------------------------------------------------------------------------------------

    def page(handler: Callable[..., Response]) -> Callable[..., Response]:
        """Run a page handler: the login form without a token, HTTP errors as HTML pages."""

        def wrapped(request: Request, **kwargs) -> Response:
            root = request.scope.get("root_path", "")
            principal = identify(request)
            if principal is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return _html(pages.login_page(root=root, next_url=target), 401)
            try:
                return handler(request, principal, root, **kwargs)
            except HTTPException as exc:
                title = {404: "Not found", 422: "Invalid request"}.get(exc.status_code, "Error")
                return _html(pages.error_page(title, str(exc.detail), root=root, who=principal.name), exc.status_code)

        return wrapped

    def _overview(request: Request, principal: Principal, root: str) -> Response:
        client = store(request)
        versions = queries.list_models(client, principal)
        health = health_section.health_of(client, principal, [v["model"] for v in versions], settings)
        body = pages.overview_page(
            queries.overview(client, principal, by_version=True),
            versions,
            {s["model"]: s for s in queries.overview(client, principal)},
            root=root,
            who=principal.name,
            health={m: health_section.badge_html(h) for m, h in health.items()},
        )
        return _html(body)

    overview_handler = page(_overview)

    @router.get("/", include_in_schema=False, response_class=HTMLResponse)
    def overview_root(request: Request) -> Response:
        return overview_handler(request)

    @router.get("/models", include_in_schema=False, response_class=HTMLResponse)
    def overview_models(request: Request) -> Response:
        return overview_handler(request)

    def _model(request: Request, principal: Principal, root: str, model: str, window: str | None) -> Response:
        within = parse_window(window, "window")
        client = store(request)
        visible(client, principal, model)
        body = pages.model_page(
            model,
            versions=[v for v in queries.list_models(client, principal) if v["model"] == model],
            latest=_verdicts(queries.latest_drift(client, principal, model, within)),
            history=queries.drift_history(
                client,
                principal,
                model,
                None,
                None,
                settings.history_windows,
                until=within.end if within else None,
            ),
            performance=queries.performance(client, principal, model, within),
            latency_summary=queries.latency_summary(client, principal, model, within),
            latency=queries.latency(client, principal, model, within),
            reproducibility=queries.reproducibility(client, principal, model, within),
            runs=queries.runs(client, principal, model, within, None, 200),
            within=window or "",
            root=root,
            who=principal.name,
            llm_section=llm_section.section(client, principal, model, within),
            estimation_section=estimation_section.section(client, principal, model, within),
            health_section=health_section.section(
                health_section.health_of(client, principal, [model], settings)[model]
            ),
            analytics_drift=analytics_section.drift_section(client, principal, model, within),
            analytics_trends=analytics_section.trends_section(client, principal, model, within),
        )
        return _html(body)

    model_handler = page(_model)

    def _report(
        request: Request,
        principal: Principal,
        root: str,
        model: str,
        reference: str | None,
        current: str | None,
        kind: str,  # page | html | json
    ) -> Response:
        ref, cur = _report_windows(reference, current)
        client = store(request)
        visible(client, principal, model)
        try:
            report = _build(client, principal, model, ref, cur)
        except NoData as exc:
            if kind == "page":
                return _html(pages.no_data_page(model, str(exc), root=root, who=principal.name))
            raise HTTPException(404, detail=str(exc)) from None
        if kind == "html":
            return FileResponse(
                report.html_path,
                media_type="text/html; charset=utf-8",
                headers={**SECURITY_HEADERS, "Content-Security-Policy": REPORT_CSP},
                content_disposition_type="inline",
                filename=f"{_file_stem(model)}-report-{report.input_hash[:12]}.html",
            )
        if kind == "json":
            return FileResponse(
                report.json_path,
                media_type="application/json",
                headers=SECURITY_HEADERS,
                filename=f"{_file_stem(model)}-report-{report.input_hash[:12]}.json",
            )
        query = urlencode({"reference": reference, "current": current})
        return _html(
            pages.report_page(
                model, report.provenance, query=query, cached=report.cached, root=root, who=principal.name
            )
        )

    report_handler = page(_report)

    def whole_name(request: Request, model: str, suffix: str) -> str | None:
        """``model/suffix`` when that is the visible model the URL means (a model named ``x/report``), else None.

        ``/models/x/report`` is the report of ``x``, unless ``x`` is not visible and ``x/report`` is.
        """
        principal = identify(request)
        whole = f"{model}/{suffix}"
        if principal is None or model_name_problem(whole):
            return None
        client = store(request)
        if queries.model_visible(client, principal, model) or not queries.model_visible(client, principal, whole):
            return None
        return whole

    @router.get("/models/{model:path}/report", include_in_schema=False, response_class=HTMLResponse)
    def report_page(request: Request, model: str, reference: str | None = None, current: str | None = None):
        if whole := whole_name(request, model, "report"):
            return model_handler(request, model=whole, window=request.query_params.get("window"))
        return report_handler(request, model=model, reference=reference, current=current, kind="page")

    @router.get("/models/{model:path}/report.html", include_in_schema=False)
    def report_html(request: Request, model: str, reference: str | None = None, current: str | None = None):
        if whole := whole_name(request, model, "report.html"):
            return model_handler(request, model=whole, window=request.query_params.get("window"))
        return report_handler(request, model=model, reference=reference, current=current, kind="html")

    @router.get("/models/{model:path}/report.json", include_in_schema=False)
    def report_json(request: Request, model: str, reference: str | None = None, current: str | None = None):
        # A download for scripts: errors as JSON (401, 404, 422), not as pages.
        if whole := whole_name(request, model, "report.json"):
            return model_handler(request, model=whole, window=request.query_params.get("window"))
        principal = require(request)
        return _report(request, principal, request.scope.get("root_path", ""), model, reference, current, "json")

    # -- login, static ------------------------------------------------------------------------------

    @router.get("/login", include_in_schema=False, response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:
        return _html(pages.login_page(root=request.scope.get("root_path", ""), next_url=_safe_next(next)))

    @router.post("/login", include_in_schema=False, response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = _safe_next((form.get("next") or ["/"])[0])
        root = request.scope.get("root_path", "")
        if authenticator.authenticate(token) is None:
            return _html(pages.login_page(root=root, message="That token is not valid.", next_url=target), 401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=root or "/",
        )
        return response

    @router.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        response = RedirectResponse(f"{root}/login", status_code=303)
        response.delete_cookie(COOKIE, path=root or "/")
        return response

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404, detail=f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "max-age=3600"})

    # Last: `{model:path}` matches every path under /models/, so the sub-routes above must come first.
    @router.get("/models/{model:path}", include_in_schema=False, response_class=HTMLResponse)
    def model_page(request: Request, model: str, window: str | None = None) -> Response:
        return model_handler(request, model=model, window=window)

    def _build(client, principal: Principal, model: str, reference: Window, current: Window):
        return build_report(
            client,
            principal,
            model,
            reference,
            current,
            sample_size=settings.report_sample_size,
            seed=settings.report_seed,
            cache_dir=settings.report_cache_dir,
        )

    return router


def _report_windows(reference: str | None, current: str | None) -> tuple[Window, Window]:
    ref = parse_window(reference, "reference", required=True)
    cur = parse_window(current, "current", required=True)
    assert ref is not None and cur is not None
    return ref, cur


def _file_stem(model: str) -> str:
    """A model name as part of a download's file name: no path separators or characters file systems refuse."""
    return re.sub(r'[\\/:*?"<>|]+', "_", model).strip(". ") or "model"


def _safe_next(target: str) -> str:
    """Only same-site paths: never redirect to another host after login."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, "Content-Security-Policy": PAGE_CSP})


def _verdicts(rows: list[dict]) -> list[dict]:
    """Each drift row with its verdict (stored in ``details`` by the detector), for display and JSON."""
    out = []
    for row in rows:
        try:
            details = json.loads(row.get("details") or "{}")
        except ValueError:
            details = {}
        verdict = details.get("verdict") if isinstance(details, dict) else None
        explained = {  # text features: what drove the verdict (detectors.drift.text)
            key: details[key]
            for key in ("typical_words", "typical_examples")
            if isinstance(details, dict) and key in details
        }
        out.append({**row, **explained, "verdict": verdict or ("drift" if row["drifted"] else "no drift")})
    return out


def _drift_status(model: str, rows: list[dict]) -> dict:
    rows = _verdicts(rows)

    def order(r: dict) -> tuple:
        return (not r["drifted"], -pages.severity(r["method"], r["statistic"], r["p_value"], r["threshold"]))

    return {
        "model": model,
        "current_start": rows[0]["current_start"] if rows else None,
        "current_end": rows[0]["current_end"] if rows else None,
        "dataset": [r for r in rows if r["target"] == "dataset"],
        "features": sorted((r for r in rows if r["target"] == "feature"), key=order),
        "predictions": sorted((r for r in rows if r["target"] == "prediction"), key=order),
    }


def _with_slo_met(rows: list[dict]) -> list[dict]:
    return [{**r, "slo_met": r["slo_attainment"] >= r["slo_percentile"]} for r in rows]


def _statuses(client, principal: Principal) -> list[dict]:
    versions: dict[str, list[str]] = {}
    for v in queries.list_models(client, principal):
        versions.setdefault(v["model"], []).append(v["model_version"])
    statuses = {s["model"]: s for s in queries.overview(client, principal)}
    out = []
    for model in sorted(set(versions) | set(statuses)):
        s = dict(statuses.get(model, {}))
        s["model"] = model
        s["versions"] = versions.get(model, [])
        if s.get("slo_attainment") is not None:
            s["slo_met"] = s["slo_attainment"] >= s["slo_percentile"]
        out.append(s)
    return out
