"""Texted-code guesses an attacker gets in one hour at one store, at the default settings.

The attacker rotates phone numbers (each gets its texts) and the store's cases, and types wrong
codes as fast as the cloud takes them; when refused it waits and tries again. The real policy
decides every request over SQLite, on a fake clock stepped through one hour. Figures: the guesses
that were checked (each a chance), the texts it cost, and the chance that one of them hit the code
(its length read off a texted code).

Run by bench/run.py; `python bench/guess_bench.py` prints them alone.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "cloud"), str(REPO / "host_tools")]

from pydantic import SecretStr  # noqa: E402
from sqlalchemy import select  # noqa: E402

from casecloud import registry  # noqa: E402
from casecloud.adapters.notify import RecordingNotifier  # noqa: E402
from casecloud.models import Alert, Case, SmsOutbox, Store  # noqa: E402
from casecloud.policy import Reply  # noqa: E402
from casecloud.runtime import Runtime, build  # noqa: E402
from casecloud.settings import Settings  # noqa: E402

CASES = 12
HOUR = 3600
WAIT_S = 5  # how long the attacker waits after a refusal


class Clock:
    def __init__(self) -> None:
        self.t = 1_750_000_000.0

    def __call__(self) -> float:
        return self.t


def _ask(rt: Runtime, case_id: str, phone: str | None = None, sid: str = "", code: str = "") -> Reply:
    with rt.sessions.begin() as s:
        case = s.get(Case, case_id)
        assert case is not None
        store = s.get(Store, case.store_id)
        assert store is not None
        r = (rt.policy.on_phone(s, store, case, phone) if phone is not None
             else rt.policy.on_otp(s, store, case, sid, code))
    return rt.policy.after_commit(rt.sessions, r)


def _number(i: int) -> str:
    return f"202{555 + i // 10000}{i % 10000:04d}"  # valid NANP numbers, a fresh one each time


def guesses_per_hour() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        clock = Clock()
        rt = build(Settings(data_dir=Path(d), admin_token=SecretStr("bench")), clock=clock,
                   notifier=RecordingNotifier())
        try:
            with rt.sessions.begin() as s:
                registry.create_store(s, "s1", rt.now())
                for c in range(CASES):
                    registry.register_case(s, "s1", f"c{c}", rt.now())
            end = clock.t + HOUR
            checked = hits = texts = i = 0
            digits = 0
            sid, left = "", 0
            while clock.t < end:
                case_id = f"c{i % CASES}"
                if left == 0:
                    r = _ask(rt, case_id, phone=_number(i))
                    if r.t != "challenge":
                        i += 1
                        clock.t += WAIT_S
                        continue
                    texts += 1
                    sid, left = r.fields["sid"], rt.settings.otp_tries
                    if not digits:
                        with rt.sessions() as s:
                            body = s.scalars(select(SmsOutbox.body).order_by(SmsOutbox.id.desc())).first() or ""
                        m = re.search(r"\b(\d+)\b", body)
                        digits = len(m.group(1)) if m else 0
                r = _ask(rt, case_id, sid=sid, code=f"{secrets.randbelow(10**digits):0{digits}d}")
                if r.why == "bad_code":
                    checked += 1
                    left -= 1
                    if left == 0:
                        i += 1
                    continue
                if r.t == "allow":
                    checked += 1
                    hits += 1
                left = 0
                i += 1
                clock.t += WAIT_S
            with rt.sessions() as s:
                alerts = len(list(s.scalars(select(Alert).where(Alert.kind == "wrong_codes"))))
        finally:
            rt.engine.dispose()
    chance = 1 - (1 - 10.0 ** -digits) ** checked
    return {"guess_code_digits": digits, "guess_checked_per_hour_per_store": checked,
            "guess_texts_per_hour_per_store": texts, "guess_hits": hits,
            "guess_hit_chance_per_hour_per_store": float(f"{chance:.3g}"), "guess_wrong_codes_alerts": alerts}


if __name__ == "__main__":
    print(json.dumps(guesses_per_hour(), indent=1))
