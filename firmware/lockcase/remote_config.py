# Config changes sent by the cloud (signed `staff` and `config` commands). The new config is
# validated as a whole before it replaces config.json (write then rename), so a bad value is
# refused with the validator's message and the case keeps running on what it had.

from lockcase import config
from lockcase.compat import const, json_whole

_MAX_STAFF = const(32)  # credentials in one staff set (docs/protocol.md, `state`)
_MAX_PARTS = const(8)
# ota_key: the release key is what keeps a cloud from running its own firmware on a case
# (docs/ota.md): set at the case only (casectl provision), never by the cloud, not even the first.
_FIXED = ("staff", "cloud", "case_id", "store_id", "board", "ota_key")
_staged = None  # [sv, n, {i: staff list}, config set] of the `state` being received


def _raw():
    with open(config.PATH) as f:
        return json_whole(f.read())


def apply(kind, body, staff=None):
    """Apply a staff or config command. Raises ValueError with a message for a refused change."""
    raw = _raw()
    if kind == "staff":
        st = raw.setdefault("staff", {})
        key = "pins" if body["kind"] == "pin" else "badges" if body["kind"] == "badge" else None
        if key is None:
            raise ValueError("kind must be pin or badge")
        items = [e for e in st.get(key, []) if e.get("id") != body["sid"]]
        if body["op"] == "add":
            h = body.get("hash")
            if not isinstance(h, str) or len(h) != 64:
                raise ValueError("add needs a 64-hex-digit hash")
            items.append({"id": body["sid"], "hash": h})
        elif body["op"] != "del":
            raise ValueError("op must be add or del")
        st[key] = items
    else:
        _override(raw, body["set"])
    return _commit(raw, staff if kind == "staff" else None)


def _override(raw, changes):
    for k, v in changes.items():
        if k in _FIXED:
            raise ValueError("%s cannot be changed remotely" % k)
        raw[k] = v


def _commit(raw, staff):
    # The whole new config is validated, then saved in one go; staff (when given) take effect at
    # once, other keys at the next boot.
    try:
        cfg = config.validate(raw)
    except config.ConfigError as exc:
        raise ValueError(str(exc))
    config.save(raw, config.PATH)
    if staff is not None:
        staff.__init__(cfg["staff"])
    return cfg


def idle():
    """No `state` is being received: nothing of this module's is needed until the next command."""
    return _staged is None


def state(body, staff=None):
    """One part of a `state` command (the cloud's desired staff set and config overrides, version
    `sv`). Parts are kept in RAM until every part of one version is in; then the whole state is
    validated and written in one save, so a lost or reordered part never leaves a mixed set. Returns
    True once applied; ValueError for a refused state (nothing is changed)."""
    global _staged
    sv, i, n = body["sv"], body["i"], body["n"]
    if not 0 <= i < n <= _MAX_PARTS:
        raise ValueError("part %d of %d" % (i, n))
    s = _staged
    if s is None or s[0] != sv or s[1] != n:
        s = _staged = [sv, n, {}, {}]
    s[2][i] = body["staff"]  # not the whole body: its header is not needed
    if i == 0:
        s[3] = body.get("set") or {}
    if len(s[2]) < n:
        return False
    _staged = None
    raw = _raw()
    st = raw.setdefault("staff", {})
    # Credentials the cloud issued (ids s_...) are replaced by its set; provisioned ones stay.
    lists = {}
    for key in ("pins", "badges"):
        lists[key] = [e for e in st.get(key, []) if not str(e.get("id", "")).startswith("s_")]
    count = 0
    for k in range(n):
        for e in s[2][k]:
            if type(e) is not list or len(e) != 3 or e[0] not in ("pin", "badge"):
                raise ValueError("staff entries are [pin|badge, sid, hash]")
            lists[e[0] + "s"].append({"id": e[1], "hash": e[2]})
            count += 1
    if count > _MAX_STAFF:
        raise ValueError("more than %d staff credentials" % _MAX_STAFF)
    _override(raw, s[3])
    st["pins"], st["badges"], st["v"] = lists["pins"], lists["badges"], sv
    _commit(raw, staff)
    return True
