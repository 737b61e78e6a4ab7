"""Fake PLCs speaking the real protocols, for demos and tests: `python -m simulators`."""
