# LockCase firmware. Hardware reaches this package only through the board module.
VERSION = "0.1.0"
# The lowest release version this firmware takes over the air when no confirmed release has set a
# higher one (docs/ota.md, anti-rollback): nothing below the first version with the OTA update.
FLOOR = "0.1.0"
