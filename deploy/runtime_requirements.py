"""Print the gateway's dependencies for the production image: pyproject's list without the
packages only `gateway demo` needs (the embedded MQTT broker). The Dockerfile installs these,
then the gateway's own wheel with --no-deps."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

DEMO_ONLY = {"amqtt"}  # gateway demo's embedded broker; a plant has its own broker


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower()


def runtime_requirements(pyproject: Path) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in dependencies if requirement_name(d) not in DEMO_ONLY]


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pyproject.toml")
    print("\n".join(runtime_requirements(path)))
