"""The cloud's release and rollout API (/v1/admin/releases, /v1/admin/rollouts; hq), as casectl
uses it: publish a release built by `casectl release build`, drive rollouts, read the fleet's
release public key for provisioning. Only the release's manifest, signature and files go up: the
private key is never read here."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from casectl.cloudapi import Cloud
from casectl.errors import CloudError, Usage
from casectl.release import Release, fingerprint, verify


def release_keys(cloud: Cloud) -> list[str]:
    """The release public keys the cloud checks uploads with (64 hex each, newest first); none
    from a cloud that has none, or is older than releases."""
    r = cloud._req("GET", "/v1/admin/releases/key")
    if r.status_code == 404:
        return []
    return [str(k) for k in cloud._ok(r, "reading the release keys")["keys"]]


def pinned_key(cloud: Cloud, pin: str) -> str:
    """The cloud's release key whose fingerprint starts with `pin` (the technician's, from
    `casectl release keygen`): the cloud may say which key, never choose it."""
    pin = pin.strip().lower()
    if len(pin) < 16 or any(c not in "0123456789abcdef" for c in pin):
        raise Usage("--ota-key-fingerprint: at least 16 hex digits, as `casectl release keygen` prints them")
    for k in release_keys(cloud):
        if fingerprint(k).startswith(pin):
            return k
    raise Usage(f"the cloud has no release key with fingerprint {pin}",
                "check the fingerprint, or pass the key itself: --ota-key release.pub")


def publish(cloud: Cloud, rel: Release, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Upload the manifest and signature, then each file the cloud still misses (a publish cut
    short resumes where it stopped). Returns the release as the cloud has it."""
    doc = rel.doc
    keys = release_keys(cloud)
    if keys and not any(verify(k, rel.manifest, rel.sig) for k in keys):
        # the cloud would refuse it too: say here which key it wants, before anything is sent
        raise CloudError(f"release {doc['rel']} does not verify with the fleet's release key",
                         f"the cloud trusts key {', '.join(fingerprint(k)[:16] for k in keys)} (fingerprint): build "
                         "the release with that key's release.key (casectl release build --key), and publish it "
                         "as built (a manifest changed after signing no longer verifies)")
    body = {"manifest": base64.b64encode(rel.manifest).decode(), "sig": rel.sig}
    r = cloud._req("POST", "/v1/admin/releases", json=body)
    if r.status_code == 409:  # there already: the same bytes, or another release under its id
        have = cloud._ok(cloud._req("GET", f"/v1/admin/releases/{doc['rel']}"), f"reading release {doc['rel']}")
        if base64.b64decode(have["manifest"]) != rel.manifest:
            raise CloudError(f"the cloud holds another release named {doc['rel']}",
                             "a release id names one content: build with another --rel")
        out: dict[str, Any] = have
    else:
        out = cloud._ok(r, f"publishing release {doc['rel']}")
    todo = list(out.get("missing", []))
    for n, idx in enumerate(todo):
        path = doc["files"][idx][0]
        data = base64.b64encode(rel.files[path]).decode()
        out = cloud._ok(cloud._req("PUT", f"/v1/admin/releases/{doc['rel']}/files/{idx}", json={"data": data}),
                        f"uploading {path}")
        if progress:
            progress(n + 1, len(todo))
    return out


def highest_floor(cloud: Cloud, board: str) -> str | None:
    """The highest floor among the board's published releases (None: none published yet)."""
    got = cloud._ok(cloud._req("GET", "/v1/admin/releases/floor", params={"board": board}),
                    f"reading the published floor of {board}")
    return str(got["floor"]) if got.get("floor") else None


def releases(cloud: Cloud) -> list[dict[str, Any]]:
    return cloud._ok(cloud._req("GET", "/v1/admin/releases"), "listing releases")


def rollout(cloud: Cloud, body: dict[str, Any]) -> dict[str, Any]:
    return cloud._ok(cloud._req("POST", "/v1/admin/rollouts", json=body), f"rolling out {body.get('release')}")


def rollouts(cloud: Cloud, release: str | None = None) -> list[dict[str, Any]]:
    return cloud._ok(cloud._req("GET", "/v1/admin/rollouts", params={"release": release} if release else None),
                     "listing rollouts")


def status(cloud: Cloud, rollout_id: str) -> dict[str, Any]:
    return cloud._ok(cloud._req("GET", f"/v1/admin/rollouts/{rollout_id}"), f"reading rollout {rollout_id}")


def halt(cloud: Cloud, rollout_id: str, reason: str) -> dict[str, Any]:
    return cloud._ok(cloud._req("POST", f"/v1/admin/rollouts/{rollout_id}/halt", json={"reason": reason}),
                     f"halting rollout {rollout_id}")


def resume(cloud: Cloud, rollout_id: str) -> dict[str, Any]:
    return cloud._ok(cloud._req("POST", f"/v1/admin/rollouts/{rollout_id}/resume"), f"resuming rollout {rollout_id}")
