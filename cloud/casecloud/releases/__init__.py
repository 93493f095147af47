"""Over-the-air firmware updates, the cloud's side (docs/ota.md): the release store (store.py:
upload with verification against the fleet's release public keys), rollouts in waves with their
automatic halt and each case's state (rollout.py), and the chunk server that answers the cases'
`req fwget` (chunks.py). The cloud can check and publish a release, never make one: the private
release key stays with casectl."""
