# The case's side of the cloud link. protocol.py is the message codec (docs/protocol.md).
