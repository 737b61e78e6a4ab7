"""The status server's access rules (gateway.http_access) and the config's http.token checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.http_access import (
    AccessPolicy,
    RequestFacts,
    bearer_matches,
    is_loopback,
    parse_listen,
    same_origin,
    token_problem,
)

pytestmark = pytest.mark.unit
TOKEN = "s3cret-token-0123456789"


def post(**facts: object) -> RequestFacts:
    return RequestFacts(method="POST", path="/api/reload", **facts)  # type: ignore[arg-type]


@pytest.mark.parametrize(("listen", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), (":8080", ("127.0.0.1", 8080)),
    ("[::1]:0", ("::1", 0)), ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ("gateway.local:80", ("gateway.local", 80))])
def test_listen_parses_host_and_port(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(("listen", "reason"), [
    ("8080", "not host:port"), ("127.0.0.1", "not host:port"), ("127.0.0.1:99999", "host:port"),
    ("127.0.0.1:http", "host:port"), ("::1:8080", "in brackets"), ("a b:80", "not a host")])
def test_listen_that_is_not_host_port_says_why(listen: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_listen(listen)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST.", True), ("0.0.0.0", False), ("::", False),
    ("192.168.1.20", False), ("gateway.local", False), ("", False)])
def test_loopback_is_only_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_bearer_token_must_match_exactly() -> None:
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN)
    assert bearer_matches(f"bearer  {TOKEN} ", TOKEN)
    assert not bearer_matches(f"Basic {TOKEN}", TOKEN)
    assert not bearer_matches(f"Bearer {TOKEN}x", TOKEN)
    assert not bearer_matches(None, TOKEN)


@given(st.text(max_size=40))
def test_no_other_authorization_value_matches(value: str) -> None:
    assert bearer_matches(value, TOKEN) == (value.strip().lower().startswith("bearer ")
                                            and value.strip()[7:].strip() == TOKEN)


@pytest.mark.parametrize(("origin", "host", "same"), [
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("http://GW.local", "gw.local", True), ("https://gw.local", "gw.local:443", True),
    ("http://127.0.0.1:3000", "127.0.0.1:8080", False),  # Grafana on the same box
    ("http://evil.example", "127.0.0.1:8080", False), ("null", "127.0.0.1:8080", False),
    ("http://[::1]:8080", "[::1]:8080", True), ("file://", "127.0.0.1:8080", False)])
def test_same_origin_compares_host_and_port(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same


def test_loopback_server_refuses_a_foreign_host_name() -> None:
    """DNS rebinding: a page of evil.example re-pointed at 127.0.0.1 sends Host: evil.example."""
    policy = AccessPolicy("127.0.0.1", None)
    for path, host in (("/api/tags", "evil.example:8080"), ("/", "evil.example")):
        refusal = policy.check(RequestFacts("GET", path, host=host))
        assert refusal is not None and refusal.status == 403 and "loopback" in refusal.reason
    assert policy.check(RequestFacts("GET", "/api/tags", host="localhost:8080")) is None
    assert AccessPolicy("0.0.0.0", TOKEN).check(
        RequestFacts("GET", "/healthz", host="gw.plant.example")) is None


@pytest.mark.parametrize("facts", [
    post(host="127.0.0.1:8080", origin="http://evil.example"),
    post(host="127.0.0.1:8080", origin="null"),
    post(host="127.0.0.1:8080", origin="http://127.0.0.1:3000"),
    post(host="127.0.0.1:8080", fetch_site="cross-site"),
    post(host="127.0.0.1:8080", fetch_site="same-site")])
def test_cross_origin_post_is_403_with_or_without_token(facts: RequestFacts) -> None:
    for token in (None, TOKEN):
        refusal = AccessPolicy("127.0.0.1", token).check(
            RequestFacts(**{**facts.__dict__, "authorization": f"Bearer {TOKEN}"}))
        assert refusal is not None and refusal.status == 403 and "cross-origin" in refusal.reason


@pytest.mark.parametrize(("content_type", "has_body", "status"), [
    ("application/x-www-form-urlencoded", True, 415), ("multipart/form-data; boundary=x", True,
                                                       415),
    ("text/plain", True, 415), ("text/plain", False, 415), (None, True, 415),
    ("application/octet-stream", True, 415), ("application/octet-stream", False, None),
    (None, False, None),
    ("application/json", True, None), ("Application/JSON; charset=utf-8", True, None)])
def test_post_takes_no_body_or_json(content_type: str | None, has_body: bool,
                                    status: int | None) -> None:
    refusal = AccessPolicy("127.0.0.1", None).check(
        post(host="127.0.0.1:8080", content_type=content_type, has_body=has_body))
    assert (refusal.status if refusal else None) == status


def test_same_origin_post_from_the_page_passes() -> None:
    facts = post(host="127.0.0.1:8080", origin="http://127.0.0.1:8080", fetch_site="same-origin",
                 content_type="application/json", has_body=True)
    assert AccessPolicy("127.0.0.1", None).check(facts) is None


def test_token_guards_state_changes_on_loopback_and_all_but_health_on_the_network() -> None:
    loopback, network = AccessPolicy("127.0.0.1", TOKEN), AccessPolicy("0.0.0.0", TOKEN)
    authorized = f"Bearer {TOKEN}"
    for policy in (loopback, network):
        assert policy.check(post()).status == 401  # type: ignore[union-attr]
        assert policy.check(post(authorization=authorized)) is None
        for path in ("/healthz", "/"):
            assert policy.check(RequestFacts("GET", path)) is None
    for path in ("/api/tags", "/api/status", "/metrics"):
        assert loopback.check(RequestFacts("GET", path)) is None
        assert network.check(RequestFacts("GET", path)).status == 401  # type: ignore[union-attr]
        assert network.check(RequestFacts("GET", path, authorization=authorized)) is None
    # No token on loopback: nothing asks for one.
    assert AccessPolicy("127.0.0.1", None).check(post()) is None


def test_token_must_be_long_and_header_safe() -> None:
    assert token_problem(TOKEN) is None
    assert "16 characters" in (token_problem("short") or "")
    assert "ASCII" in (token_problem("spaces are not ok here") or "")
    assert "ASCII" in (token_problem("ümlaut-token-0123456") or "")


def config_text(http: str) -> str:
    return f"gateway: {{id: gw, http: {http}}}\nsinks: {{mqtt: {{}}}}\n"


def config_error(http: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        parse_config(config_text(http), env=env or {})
    return str(error.value)


def test_network_listen_without_token_is_a_config_error_with_key_path() -> None:
    message = config_error('{listen: "0.0.0.0:8080"}')
    assert "gateway.http.token: listen 0.0.0.0:8080 is reachable from the network" in message
    assert "line 1" in message
    assert "gateway.http.token" in config_error('{listen: "192.168.1.5:8080", token: ""}')


def test_network_listen_with_token_from_the_environment_is_accepted() -> None:
    config = parse_config(config_text('{listen: "0.0.0.0:8080", token: "${T}"}'), env={"T": TOKEN})
    assert config.gateway.http.token is not None
    assert config.gateway.http.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(config), "a SecretStr is never printed"


def test_disabled_server_needs_no_token_and_loopback_needs_none() -> None:
    assert parse_config(config_text('{listen: "0.0.0.0:8080", enabled: false}'), env={})
    assert parse_config(config_text('{listen: "127.0.0.1:8080"}'), env={}).gateway.http.token \
        is None


def test_bad_listen_and_short_token_are_config_errors() -> None:
    assert "gateway.http.listen" in config_error('{listen: "8080"}')
    assert "16 characters" in config_error('{token: "abc"}')
