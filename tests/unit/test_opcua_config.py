import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from drivers.opcua.config import OpcUaDeviceConfig
from drivers.opcua.driver import OpcUaDriver
from drivers.opcua.planning import ServerDeadband, server_deadband

pytestmark = pytest.mark.unit
README = Path(__file__).resolve().parents[2] / "drivers" / "opcua" / "README.md"


def device(**extra: object) -> dict[str, object]:
    return {"name": "cnc", "driver": "opcua", "connection": {"endpoint": "opc.tcp://h:4840"},
            "tags": [{"name": "t", "node": "ns=2;s=T"}], **extra}


def test_readme_sample_is_a_valid_device() -> None:
    sample = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)[0]
    [raw] = yaml.safe_load(sample)
    cfg = OpcUaDeviceConfig.model_validate(raw)
    oven = next(t for t in cfg.tags if t.name == "oven_temp")
    assert server_deadband(oven.server_deadband, oven.server_deadband_type, cfg.server_deadband,
                           cfg.server_deadband_type) == ServerDeadband(2, "percent")
    assert OpcUaDriver(cfg).name == "cnc-01"


def test_subscription_defaults() -> None:
    cfg = OpcUaDeviceConfig.model_validate(device(mode="subscribe"))
    assert (cfg.server_deadband, cfg.server_deadband_type, cfg.max_buffered) == (
        None, "absolute", 100_000)


@pytest.mark.parametrize("extra", [{"server_deadband": -1}, {"server_deadband_type": "relative"},
                                   {"max_buffered": 0}])
def test_invalid_subscription_options_are_refused(extra: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OpcUaDeviceConfig.model_validate(device(mode="subscribe", **extra))


def test_a_server_deadband_in_poll_mode_is_refused() -> None:
    with pytest.raises(ValidationError, match="server_deadband applies to mode: subscribe"):
        OpcUaDeviceConfig.model_validate(device(mode="poll", server_deadband=1))
    tags = [{"name": "t", "node": "ns=2;s=T", "server_deadband": 1}]
    with pytest.raises(ValidationError, match="server_deadband applies to mode: subscribe"):
        OpcUaDeviceConfig.model_validate({**device(), "tags": tags})
