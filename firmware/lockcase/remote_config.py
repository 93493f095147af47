# Config changes sent by the cloud (signed `staff` and `config` commands). The new config is
# validated as a whole before it replaces config.json (write then rename), so a bad value is
# refused with the validator's message and the case keeps running on what it had.

from lockcase import config
from lockcase.compat import json_whole


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
        for k, v in body["set"].items():
            if k in ("staff", "cloud", "case_id", "store_id", "board"):
                raise ValueError("%s cannot be changed remotely" % k)
            raw[k] = v
    try:
        cfg = config.validate(raw)
    except config.ConfigError as exc:
        raise ValueError(str(exc))
    config.save(raw)
    if staff is not None and kind == "staff":
        staff.__init__(cfg["staff"])  # takes effect at once; other keys at the next boot
    return cfg
