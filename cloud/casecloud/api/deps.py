"""FastAPI dependencies: the guards every request passes, the bootstrap (admin) token, and the
runtime, the app's services and a transaction handed to the routes from `app.state`. Who the
caller is and what they may do: casecloud.accounts.access."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from casecloud import codec
from casecloud.api.services import Services
from casecloud.runtime import Runtime

MAX_BODY = 64 * 1024  # far above any admin or app request
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def plain_url(request: Request) -> None:
    """Every request: no NUL character in the path (ids) or the query (filters) either."""
    if "\x00" in request.scope.get("path", "") or any(
            "\x00" in k or "\x00" in v for k, v in request.query_params.multi_items()):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "NUL character in the URL")


async def bounded_json(request: Request) -> None:
    """Every JSON body: read with the protocol's parser too (codec.parse), since FastAPI's json.loads
    takes NaN, Infinity, 1e999 and integers of any size into `Any` fields (a config's `set`), where
    PostgreSQL refused them with a 500 and a case would have been sent them."""
    # Every body, whatever its content type says: FastAPI reads JSON under any spelling of the
    # type (application/JSON, +json suffixes). Forms (the console's login and pages) are the one
    # exception: they are not JSON, only bounded; an endpoint that takes JSON refuses them (422).
    if request.method in ("POST", "PUT", "PATCH"):
        body = await request.body()
        if body and request.headers.get("content-type", "").lower().startswith(_FORMS):
            if len(body) > MAX_BODY:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {MAX_BODY} bytes")
        elif body:
            try:
                codec.parse(body, max_bytes=MAX_BODY)
            except codec.Rejected as e:
                if e.reason == "too_large":
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {MAX_BODY} bytes") from None
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                    "body: not UTF-8 JSON, nested deeper than 16, or a number outside signed "
                                    "64 bits or not finite") from None


# async: read on the event loop, not in a worker thread of their own
async def _services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def _runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    return rt


Svc = Annotated[Services, Depends(_services)]
Rt = Annotated[Runtime, Depends(_runtime)]


def _db(request: Request) -> Iterator[Session]:
    """One transaction per request, committed when the endpoint returns without an error."""
    rt: Runtime = request.app.state.rt
    with rt.sessions.begin() as s:
        yield s


# scope="function": committed before the response goes out. By default FastAPI ends a yield
# dependency after sending the response, so a client could be told 201 and act on it (casectl
# registering a case in the store it just created) before the commit, or for a commit that fails.
DB = Annotated[Session, Depends(_db, scope="function")]

_bearer = HTTPBearer(auto_error=False)


def bootstrap_token(rt: Rt, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """The settings' admin token (settings.admin_bearer): POST /v1/bootstrap/hq-user only, which
    refuses it once an HQ user exists (accounts/bootstrap.py)."""
    token = rt.settings.admin_bearer()
    if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the admin (bootstrap) token is required",
                            headers={"WWW-Authenticate": "Bearer"})
