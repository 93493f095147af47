# Boot-time assembly: config -> board -> app. Runs once; main.py drops this module and the config
# validator afterwards, so the RAM their code takes is free for the running case.
import gc

import board

from lockcase.compat import forget  # noqa: F401  (main.py drops this module with it)


def build():
    # (The steps are inline, not functions of their own: each name a module holds is interned for
    # good, and the production case sits near the size where the qstr pool doubles: docs/memory.md.)
    from lockcase import config

    error = None
    try:
        cfg = config.load()
    except config.NotProvisioned:
        cfg = config.defaults()
    except config.ConfigError as exc:
        cfg = config.defaults()
        error = str(exc)
    if cfg["board"] != board.NAME and cfg["provisioned"]:
        error = "config is for board %s, this is %s" % (cfg["board"], board.NAME)
        cfg = config.defaults()
    del config  # the module goes with forget() below: no reference left on this frame
    forget("lockcase.config")
    gc.collect()  # the validator's code and the raw JSON go before the app's modules load
    if error:
        print(error)
    from lockcase.app import App
    from lockcase.journal import Journal

    # Loading the modules left garbage between their code; collected now, the holes take the
    # objects made next instead of being left as gaps too small for a later file buffer.
    gc.collect()
    hw = board.create(cfg)
    try:
        clock = getattr(hw, "epoch", None)  # the board's RTC where it has its own idea of time
        # Sized from the flash filesystem's statvfs (lockcase.journal_size, docs/memory.md).
        journal = Journal(clock=clock) if clock else Journal()
        forget("lockcase.journal_size")
    except Exception as exc:  # a broken filesystem must not keep the lock from working
        print("journal unavailable:", exc)
        journal = None
    cause = board.reset_cause()
    gc.collect()  # and the journal's scan of its segments left its own
    app = App(hw, cfg, journal, reset_cause=cause, config_error=error)
    from lockcase import recover

    recover.journal_lost_grant(app.safe, app.bus)
    forget("lockcase.recover")
    if cfg.get("provisioned") and not error:
        if cfg.get("cloud"):
            subs = len(app.bus._subs)
            try:
                _attach_cloud(app, cfg, cause)
            except MemoryError:
                # Never silent, never a boot loop: the case runs offline (staff PIN and badge
                # open it on the device) and says why; a reset tries the cloud again.
                app.cloud = app.link = app.entry.cloud = None
                del app.bus._subs[subs:]  # the half-built client's (it would still hear grants)
                for name in ("lockcase.uplink.client", "lockcase.uplink.link", "lockcase.uplink.codec",
                             "lockcase.uplink", "lockcase.drivers.wifi"):
                    forget(name)  # their code is most of what was just loaded
                gc.collect()
                try:
                    print("cloud: out of memory at boot: running offline")
                    app.bus.emit("fault", part="cloud", error="no memory: boot")
                except MemoryError:
                    pass
        if cfg.get("nfc"):
            # Imported only when configured; a reader the board cannot host is a fault, not a crash.
            try:
                from lockcase import nfc

                app.nfc = nfc.make(app, cfg["nfc"])  # pyright: ignore[reportAttributeAccessIssue]
            except Exception as exc:
                app.bus.emit("fault", part="nfc", error=str(exc))
    if app.cloud is None:
        _ota_without_cloud()
    # From here on a collection runs after every 4 KiB allocated, not only when an allocation
    # fails: the running case's garbage (a message signed, a journal batch read) is freed
    # while it is small and before it is surrounded, instead of leaving the heap in pieces
    # too small for the next connect or message. About one collection a second here (5 KB/s
    # allocated with the link up and a shopper at the keypad); measured, the production case
    # then completes at 134k where it failed at 137k without (docs/memory.md).
    gc.threshold(4096)
    return app


def _ota_without_cloud():
    # A release on trial that cannot attach its cloud link (a config its own validator refuses, no
    # memory for the link) can never confirm: it goes back to the previous firmware now.
    import os

    try:
        os.stat("ota.json")
    except OSError:
        return
    from lockcase.ota import update

    update.no_cloud(board)
    for name in ("lockcase.ota.update", "lockcase.ota.slots", "lockcase.ota"):
        forget(name)


def _attach_cloud(app, cfg, reset_cause):
    # Imported only when configured: a case without a cloud keeps that RAM.
    import binascii

    from lockcase import VERSION
    from lockcase.compat import ticks_diff
    from lockcase.uplink import codec as P
    from lockcase.uplink.client import CloudClient
    from lockcase.uplink.link import Link

    cc = dict(cfg["cloud"])
    if cc.get("ca"):
        cc["ca"] = binascii.a2b_base64(cc["ca"])
    topics = P.topics(cc.get("prefix", P.PREFIX), cfg["store_id"], cfg["case_id"])
    subs = P.subscriptions(cc.get("prefix", P.PREFIX), cfg["store_id"], cfg["case_id"])
    codec = P.Codec(cfg["case_id"], binascii.unhexlify(cc["key"]), P.FileSeqs("seq.json"))
    cc["fw"] = VERSION
    ota = _ota_state()
    cc["rel"] = ota[0]
    cc["boot"] = reset_cause
    hw = app.board
    net = None
    wifi = cfg.get("wifi")
    wlan = hw.wlan() if wifi and hasattr(hw, "wlan") else None
    if wlan is not None and wifi is not None:
        from lockcase.drivers.wifi import Wifi

        net = Wifi(wlan, wifi["ssid"], wifi["password"])
    link = Link(cc, topics, subs, net, emit=app.bus.emit)
    t0 = app._t0
    cloud = CloudClient(cc, codec, topics, link, app.bus, app.lock, app.journal,
                        lambda: ticks_diff(hw.ticks_ms(), t0))
    link.bind(lambda t, m: cloud.on_message(t, m, hw.ticks_ms()), cloud.on_up, cloud.on_down)
    cloud.entry = app.entry
    cloud.app = app
    if ota[1]:
        # An update under way (resumed after the reset), a release on trial, or one rolled back to
        # report: its code loads now (lockcase.ota.update) and goes when it is done.
        try:
            from lockcase.ota.update import Ota

            cloud.ota = Ota(cloud)
        except Exception as exc:  # never a boot loop over it: the lock works without
            print("ota: cannot resume:", repr(exc))
    app.entry.cloud = cloud
    app.cloud = cloud
    app.link = link


def _ota_state():
    # (the running release's id, whether an update needs its code now), from the OTA's small files
    # (docs/ota.md) without loading it: most boots have neither.
    import os

    rel, busy = "", False
    try:
        os.stat("ota_dl.json")
        busy = True
    except OSError:
        pass
    try:
        with open("ota.json") as f:
            text = f.read()
    except OSError:
        return rel, busy
    import json

    try:
        p = json.loads(text)
        rel = p.get("rel") or ""
        busy = busy or "try" in p or "rb" in p
    except (ValueError, AttributeError):
        pass
    return rel, busy
