"""What can be checked of the packaging without a Docker engine."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gateway.config import InfluxSinkConfig, load_config

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_runs_the_readme_command_as_non_root_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'ENTRYPOINT \["gateway"\]', dockerfile)
    assert 'CMD ["run", "--config", "/etc/gateway/config.yaml"]' in dockerfile
    assert "gateway run --config" in (ROOT / "README.md").read_text()
    assert re.search(r"^USER gateway$", dockerfile, re.M)
    assert 'VOLUME ["/data"]' in dockerfile and "/healthz" in dockerfile
    for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M):
        assert (ROOT / source).exists(), source


def test_systemd_unit_runs_the_gateway_and_reloads_with_sighup() -> None:
    unit = (ROOT / "deploy" / "shopfloor-gateway.service").read_text()
    assert "ExecStart=/usr/local/bin/gateway run --config" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit


def test_compose_gateway_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLUX_TOKEN", "t")
    monkeypatch.setenv("GATEWAY_HTTP_TOKEN", "a-token-of-16-chars")
    config = load_config(ROOT / "deploy" / "gateway.yaml")
    influx = config.sinks["influxdb"]
    assert isinstance(influx, InfluxSinkConfig) and influx.api == "v2"
    assert os.environ["INFLUX_TOKEN"] == "t"
    assert config.gateway.http.token is not None, "0.0.0.0 needs a token"


def test_grafana_dashboard_queries_the_documented_layout() -> None:
    import json

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "shopfloor.json")
                           .read_text())
    queries = " ".join(t["query"] for p in dashboard["panels"] for t in p["targets"])
    assert "r._measurement" in queries and "r.site" in queries and "r.area" in queries


def test_grafana_oee_panels_read_the_kpi_fields_of_the_contract() -> None:
    """Every `oee...` name in a query is a field the gateway writes (gateway.kpi.KPI_TAGS), and
    the OEE panels show the ratios, the counts and the shift."""
    import json

    from gateway.kpi import KPI_TAGS

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "shopfloor.json")
                           .read_text())
    oee_panels = [p for p in dashboard["panels"] if "OEE" in p["title"]]
    assert len(oee_panels) >= 3, "OEE now, through the shift, per shift"
    queries = " ".join(t["query"] for p in oee_panels for t in p["targets"])
    named = set(re.findall(r'"(oee\w*)"', queries)) | set(re.findall(r"\br\.(oee\w*)", queries))
    assert named <= set(KPI_TAGS), named - set(KPI_TAGS)
    assert {"oee", "oee_availability", "oee_performance", "oee_quality", "oee_shift",
            "oee_total_count", "oee_reject_count"} <= named
    assert all("r._measurement" in t["query"] for p in oee_panels for t in p["targets"])
