"""The store console (issue 12): server-rendered pages (Jinja2) with htmx as progressive
enhancement and live alarms over Server-Sent Events. One router per audience:

- home.py: `/`, login and logout, the start page; associates.py: a store's case grid, a case and
  its timeline with relock, alarms with acknowledge and resolve (associate and up);
- managers.py: staff credentials, members, the event log; reports.py: a store's reports (page
  and CSV, small counts suppressed); hq.py: stores, cases, users, API tokens, the audit log;
  shopper.py: `/app/unlock`, the QR label's page;
- live.py: `/console/live`, the alarm stream; web.py: templates, the page guard, redirects.

Our CSS and JS are in static/ (/static/console/); htmx and Swagger UI are fetched by exact version
and integrity into build/web (`make deps`) and served from there (/static/vendor/), never a CDN.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from casecloud.console import associates, home, hq, live, managers, releases, reports, shopper
from casecloud.console.web import HERE, LoginNeeded, error_page, login_redirect

PAGES = ("/console", "/app/")


def install(app: FastAPI) -> None:
    """The console's routes, static files, error pages and /docs, on the API's app."""
    vendor = app.state.rt.settings.web_assets_dir
    app.mount("/static/console", StaticFiles(directory=HERE / "static"), name="console-static")
    # check_dir off: a cloud started before `make deps` still serves its API (the pages say so)
    app.mount("/static/vendor", StaticFiles(directory=vendor, check_dir=False), name="vendor")
    for r in (home.router, associates.router, managers.router, reports.router, hq.router, releases.router,
              shopper.router, live.router):
        app.include_router(r)

    @app.exception_handler(LoginNeeded)
    async def _login(_request: Request, exc: LoginNeeded) -> Response:
        return login_redirect(exc.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # a page's refusal is a page; the API's stays JSON
        if request.url.path.startswith(PAGES) and request.url.path != "/console/live":
            return error_page(request, exc.status_code, str(exc.detail))
        return await http_exception_handler(request, exc)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="LockCase cloud API",
                                   swagger_js_url="/static/vendor/swagger-ui-dist/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui-dist/swagger-ui.css",
                                   swagger_favicon_url="/static/console/favicon.svg")


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[None]:
    """Around the app's life: the live streams are closed at shutdown, so it need not wait for them."""
    try:
        yield
    finally:
        await live.stop(app)
