# LockCase firmware. Hardware reaches this package only through the board module.
VERSION = "0.1.0"
