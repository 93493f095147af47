"""The page behind the case label's QR code (`/app/unlock?case=...`, casectl/label.py): a member
signs in with the store app's token and presses Unlock; the page shows what the case answered.
Public like /v1/app/unlock, whose logic it calls (rate limits, policy, the signed command)."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from casecloud.api import app as app_api
from casecloud.api.deps import Svc
from casecloud.api.schemas import UnlockIn
from casecloud.console.web import Form, render

router = APIRouter(include_in_schema=False)

WHY = {"refused": "This app token cannot open this case.", "rate_limited": "Too many tries: wait a minute.",
       "tamper": "The case is in alarm: ask an associate.", "the case did not answer in time":
       "The case did not answer: ask an associate."}


@router.get("/app/unlock", response_class=HTMLResponse)
def unlock_page(request: Request, case: str = "") -> HTMLResponse:
    return render(request, "unlock.html", None, case=case[:32], result=None)


@router.post("/app/unlock", response_class=HTMLResponse)
async def unlock(request: Request, svc: Svc, f: Form) -> HTMLResponse:
    case, token = f("case", max_length=200), f("token", max_length=200)
    try:
        out = await app_api.app_unlock(UnlockIn(token=token.strip(), case=case), request, svc)
    except HTTPException as e:
        why = str(e.detail)
        return render(request, "unlock.html", None, case=case[:32], status_code=e.status_code,
                      result={"ok": False, "why": WHY.get(why, why)})
    why = None if out.ok else WHY.get(out.err or "", f"The case said no ({out.err}).")
    return render(request, "unlock.html", None, case=case[:32], result={"ok": out.ok, "why": why})
