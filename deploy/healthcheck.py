"""The container's health check: is the gateway itself alive (its status server answers)?

Two healths, kept apart on purpose:
- gateway health (this script, the default): the process runs and its event loop answers HTTP.
  A PLC that is switched off must not make Docker restart the gateway: that would only lose
  the other machines' data for the time of a restart.
- plant health (`--plant`, and what GET /healthz itself reports with 200 or 503): every device
  answers and every sink is connected. Use it for alerts, not for restarts.

The port comes from GATEWAY_HTTP_LISTEN, else from gateway.http.listen in the config file
(GATEWAY_CONFIG, default /etc/gateway/config.yaml), else 127.0.0.1:8080.
Exit 0 healthy, 1 not (with one line saying why)."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:8080"


def listen_address(config_path: str) -> str:
    """host:port to ask; a wildcard listen address is asked on loopback."""
    listen = os.environ.get("GATEWAY_HTTP_LISTEN") or _from_config(config_path) or DEFAULT_LISTEN
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def _from_config(path: str) -> str | None:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
        listen = data["gateway"]["http"]["listen"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return str(listen) if listen and "${" not in str(listen) else None


def check(address: str, plant: bool, timeout: float = 4.0) -> tuple[bool, str]:
    url = f"http://{address}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return True, f"{url}: {answer.status}"
    except urllib.error.HTTPError as exc:  # 503: the gateway runs, the plant is not all well
        detail = exc.read().decode(errors="replace")[:300]
        return (not plant), f"{url}: {exc.code} {detail}"
    except OSError as exc:
        return False, f"{url}: no answer ({exc})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plant", action="store_true",
                        help="healthy only when every device and sink is (GET /healthz is 200)")
    parser.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG",
                                                           "/etc/gateway/config.yaml"))
    args = parser.parse_args(argv)
    healthy, why = check(listen_address(args.config), args.plant)
    print(("healthy: " if healthy else "unhealthy: ") + why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
