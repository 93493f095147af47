"""What every console page shares: the templates, the signed-in caller of a page, redirects with a
note, and the HTML error page.

A page takes its caller from `page(role, store_param=...)`: the same Principal and the same rules as
the API's `require` (accounts/access.py: at least the role, else 403; a store of the path that is
not the caller's answers 404 as a missing one; a state-changing request without the session's CSRF
token 403), except that a signed-out visitor is sent to the login page instead of a 401.
"""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from casecloud.accounts.access import Principal, optional_principal, permit
from casecloud.accounts.roles import Role

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")  # autoescaped (.html)

# Notes a redirect may show, by code: a page never echoes text from its URL.
NOTES: dict[str, str] = {
    "acked": "Alarm acknowledged.",
    "resolved": "Alarm resolved.",
    "relock-ok": "The case relocked.",
    "relock-refused": "The case refused to relock.",
    "staff-added": "Staff credential added; it reaches each case at its next sync.",
    "staff-revoked": "Staff credential revoked; it is removed from each case at its next sync.",
    "member-flagged": "Member flagged.",
    "member-trusted": "Member trusted.",
    "member-erased": "Member erased.",
    "store-created": "Store created.",
    "case-retired": "Case retired.",
    "user-created": "User created.",
    "user-updated": "User updated.",
    "token-revoked": "Token revoked.",
    "signed-out": "You are signed out.",
}


def when(ts: int | None) -> str:
    """Epoch seconds as UTC time for the pages (the machine-readable value goes in <time>)."""
    return "never" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


templates.env.filters["when"] = when


class LoginNeeded(Exception):
    """A page asked for by a signed-out visitor: the app's handler sends them to the login."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def page(role: Role = "associate", *, store_param: str | None = None) -> Callable[..., Awaitable[Principal]]:
    """A page's caller: `require(role, store_param)` for a page (a login redirect instead of a 401)."""

    async def dependency(request: Request,
                         p: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
        if p is None:
            raise LoginNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return permit(request, p, role, store_param)

    dependency.__name__ = f"page_{role}"
    return dependency


AssociatePage = Annotated[Principal, Depends(page("associate"))]
ManagerPage = Annotated[Principal, Depends(page("manager"))]
HqPage = Annotated[Principal, Depends(page("hq"))]
StorePage = Annotated[Principal, Depends(page("associate", store_param="store_id"))]
StoreManagerPage = Annotated[Principal, Depends(page("manager", store_param="store_id"))]


def render(request: Request, name: str, p: Principal | None, *, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    note = NOTES.get(request.query_params.get("note", ""))
    resp = templates.TemplateResponse(request, name, {"p": p, "note": note, **ctx}, status_code=status_code)
    resp.headers["Cache-Control"] = "no-store"  # pages show live state and the CSRF token
    return resp


def back(path: str, note: str | None = None) -> RedirectResponse:
    """After a form: 303 to a page of ours (Post/Redirect/Get), with a note code."""
    sep = "&" if "?" in path else "?"
    return RedirectResponse(path + (f"{sep}note={quote(note)}" if note else ""), status.HTTP_303_SEE_OTHER)


def login_redirect(path: str) -> RedirectResponse:
    return RedirectResponse("/console/login?next=" + quote(path, safe="/"), status.HTTP_303_SEE_OTHER)


def error_page(request: Request, code: int, detail: str) -> HTMLResponse:
    return render(request, "error.html", None, status_code=code, code=code, detail=detail)


class Fields:
    """A page's form, read after the app's guards: FastAPI's Form() parameters are read before
    any dependency, past deps.bounded_json's size limit and before the CSRF check."""

    def __init__(self, form: FormData) -> None:
        self.form = form

    def __call__(self, name: str, default: str = "", max_length: int = 1000) -> str:
        v = self.form.get(name)
        return v[:max_length] if isinstance(v, str) else default

    def all(self, name: str) -> list[str]:
        return [v for v in self.form.getlist(name) if isinstance(v, str)]


async def _fields(request: Request) -> Fields:
    return Fields(await request.form())


Form = Annotated[Fields, Depends(_fields)]
