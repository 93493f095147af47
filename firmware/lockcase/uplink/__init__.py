# The case's side of the cloud link ("uplink", to tell it from the cloud service in cloud/):
# codec.py the signed messages (docs/protocol.md; its twin is cloud/casecloud/codec.py),
# transport.py MQTT over TCP or TLS on umqtt.simple, link.py the connection's life (reconnects,
# keepalive, backoff), client.py the protocol's requests, replies, commands and events.
