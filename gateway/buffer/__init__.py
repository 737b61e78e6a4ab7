"""The durable store-and-forward buffer (see store.py and docs/buffer.md)."""

from gateway.buffer.store import DurableBuffer, buffer_devices, buffer_report

__all__ = ["DurableBuffer", "buffer_devices", "buffer_report"]
