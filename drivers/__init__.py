"""Protocol drivers. Each protocol is one sub-package; all resolve through `gateway.drivers`."""
