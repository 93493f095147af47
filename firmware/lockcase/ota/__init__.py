# Over-the-air updates (docs/ota.md). Nothing here is imported unless an update is in progress, a
# switched release is on trial or the cloud sends `fw`: lockcase.ota.update drops these modules
# again when it is done.
