# The NFC reader, built from config.json's "nfc" object and the board's nfc_* attributes (see
# docs/boards.md), and wired to the app: a credential read off a tap goes to App.tap(), which
# checks staff badges on the device and sends everything else to the cloud.
#
#   frame.py      PN532 frames and the errors every layer raises
#   pn532.py      PN532 commands, over one of
#   i2c.py, spi.py, hsu.py  its three host interfaces
#   mfrc522.py    MFRC522 over SPI, same chip interface
#   tags.py       what a tap carries: app token (HCE), NDEF token, UID
#   reader.py     the asyncio service: waiting on IRQ or adaptive polling, debounce, recovery


def make(app, ncfg):
    """The reader service for this case; raises ValueError when the board cannot host it."""
    import asyncio

    from lockcase.nfc.reader import Reader

    board = app.board
    chip = make_chip(board, ncfg, asyncio.sleep_ms, board.ticks_ms)
    return Reader(chip, _deliver(app), app.bus.emit, board.ticks_ms, asyncio.sleep_ms,
                  ncfg["poll_ms"], app.cfg.get("case_id", ""))


def make_chip(board, ncfg, sleep_ms, ticks_ms):
    kind = ncfg["bus"]
    bus = getattr(board, "nfc_bus", None)
    if bus is None:
        raise ValueError("this board has no %s bus for the reader" % kind)
    irq = board.nfc_irq if ncfg["irq"] else None
    # The bus clock, for the reader's budget of the loop (reader.py); the transports assume the
    # slowest usual one (I2C 100 kHz, SPI 1 MHz) when the board does not say.
    hz = getattr(board, "nfc_bus_hz", None)
    if ncfg["driver"] == "mfrc522":
        from lockcase.nfc.mfrc522 import MFRC522

        return MFRC522(bus, board.nfc_cs, sleep_ms, ticks_ms, board.nfc_reset, hz or 1_000_000)
    from lockcase.nfc.pn532 import PN532

    # Only the transport in use is imported: each one costs RAM for its code.
    if kind == "i2c":
        from lockcase.nfc.i2c import I2CTransport

        t = I2CTransport(bus, ncfg["addr"], irq, sleep_ms, ticks_ms, hz or 100_000)
    elif kind == "spi":
        from lockcase.nfc.spi import SPITransport

        t = SPITransport(bus, board.nfc_cs, irq, getattr(board, "nfc_spi_lsb", False), hz or 1_000_000)
    else:
        from lockcase.nfc.hsu import UARTTransport

        t = UARTTransport(bus, sleep_ms, ticks_ms)
    return PN532(t, sleep_ms, ticks_ms, board.nfc_reset)


def _deliver(app):
    from lockcase.nfc.tags import APP_NOT_READY, NO_APP

    def deliver(src, value):
        entry = app.entry
        if entry.state == "offline":  # not provisioned or config error: nobody to ask
            return
        now = app.board.ticks_ms()
        app._tone("key")  # the shopper hears the card was read before any answer comes
        if src is None:
            msg = "Open store app" if value in (NO_APP, APP_NOT_READY) else "Card not read"
            entry.cloud_result("denied", now, msg)
            return
        app.tap(value, src, now)

    return deliver
