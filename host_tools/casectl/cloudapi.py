"""The cloud service's admin API (cloud/casecloud/api/), as casectl uses it.

casectl calls it with an API token (docs/accounts.md: an hq token for registering cases, a
manager's for its store's staff), from the environment (CASECTL_TOKEN) or a file (--token-file,
CASECTL_TOKEN_FILE), never from a command-line flag: flags end up in shell history and in `ps`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from casectl.errors import AlreadyProvisioned, CloudError, CloudUnreachable, Usage


@dataclass
class CaseSecrets:
    """What POST /v1/admin/cases answers once: never printed, only written to the device."""

    case: str
    store: str
    key_hex: str
    key_version: int
    topic_prefix: str
    mqtt_host: str
    mqtt_port: int
    mqtt_username: str
    mqtt_password: str

    def __repr__(self) -> str:  # a stray print or traceback must not show the key
        return f"CaseSecrets(case={self.case!r}, store={self.store!r}, key_version={self.key_version}, <secrets hidden>)"


def resolve_token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            tok = token_file.read_text().strip()
        except OSError as e:
            raise Usage(f"cannot read the API token file {token_file}: {e.strerror}") from None
        if tok:
            return tok
        raise Usage(f"the API token file {token_file} is empty")
    tok = os.environ.get("CASECTL_TOKEN", "").strip()
    if tok:
        return tok
    path = os.environ.get("CASECTL_TOKEN_FILE")
    if path:
        return resolve_token(Path(path))
    raise Usage("no API token for the cloud",
                "set CASECTL_TOKEN, or pass --token-file: an API token from the console or POST /v1/tokens "
                "(docs/accounts.md)")


class Cloud:
    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout,
                                    headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Cloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _req(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self._client.request(method, path, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise CloudUnreachable(f"the cloud service at {self.url} is unreachable ({type(e).__name__})",
                                   "check --cloud / CASECTL_CLOUD and the network; the device was not changed") from None
        except httpx.TimeoutException:
            raise CloudUnreachable(f"the cloud service at {self.url} did not answer in time",
                                   "retry; the device was not changed") from None
        except httpx.HTTPError as e:
            raise CloudUnreachable(f"the cloud service at {self.url} failed: {type(e).__name__}") from None
        if r.status_code == 401:
            raise CloudError("the cloud refused the API token (unknown, revoked, or its owner disabled)",
                                 "check CASECTL_TOKEN / --token-file")
        return r

    @staticmethod
    def _detail(r: httpx.Response) -> str:
        try:
            d = r.json().get("detail")
        except ValueError:
            d = None
        return str(d) if d else r.text[:200]

    def _ok(self, r: httpx.Response, what: str) -> Any:
        if r.status_code >= 400:
            raise CloudError(f"the cloud refused {what}: {r.status_code} {self._detail(r)}")
        return r.json() if r.content else None

    def stores(self) -> list[dict[str, Any]]:
        return self._ok(self._req("GET", "/v1/admin/stores"), "listing stores")

    def create_store(self, store: str, name: str = "", country: str = "US") -> dict[str, Any]:
        return self._ok(self._req("POST", "/v1/admin/stores", json={"id": store, "name": name, "country": country}),
                        f"creating store {store}")

    def case(self, case: str) -> dict[str, Any] | None:
        r = self._req("GET", f"/v1/admin/cases/{case}")
        if r.status_code == 404:
            return None
        return self._ok(r, f"reading case {case}")

    def cases(self, store: str | None = None) -> list[dict[str, Any]]:
        return self._ok(self._req("GET", "/v1/admin/cases", params={"store": store} if store else None),
                        "listing cases")

    def events(self, *, case: str | None = None, store: str | None = None, types: list[str] | None = None,
               limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if case:
            params["case"] = case
        if store:
            params["store"] = store
        if types:
            params["type"] = types
        return self._ok(self._req("GET", "/v1/admin/events", params=params), "listing events")

    def register_case(self, store: str, case: str, name: str = "", *, rotate_if_exists: bool = False
                      ) -> tuple[CaseSecrets, bool]:
        """Register the case (or, with rotate_if_exists, rotate an existing case's key).
        Returns (secrets, rotated)."""
        r = self._req("POST", "/v1/admin/cases", json={"id": case, "store": store, "name": name})
        rotated = False
        if r.status_code == 409:
            if not rotate_if_exists:
                raise AlreadyProvisioned(
                    f"case {case} is already registered in the cloud",
                    "pass --force to give it new keys (the old device stops working), or pick another --case")
            existing = self.case(case)
            if existing and existing.get("store") != store:
                raise AlreadyProvisioned(f"case {case} belongs to store {existing.get('store')}, not {store}",
                                         "case ids are unique across the cloud: pick another --case")
            r = self._req("POST", f"/v1/admin/cases/{case}/rotate")
            rotated = True
        elif r.status_code == 422 and "no store" in self._detail(r):
            raise CloudError(f"the cloud has no store {store}", "create it first, or pass --create-store")
        body = self._ok(r, f"registering case {case}")
        m = body["mqtt"]
        return CaseSecrets(case=body["id"], store=body["store"], key_hex=body["key"], key_version=body["key_version"],
                           topic_prefix=body["topic_prefix"], mqtt_host=m["host"], mqtt_port=int(m["port"]),
                           mqtt_username=m["username"], mqtt_password=m["password"]), rotated
