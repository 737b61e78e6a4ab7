import pytest
from asyncua import ua
from pydantic import ValidationError

from drivers.opcua import nodeids
from drivers.opcua.config import OpcUaTag

pytestmark = pytest.mark.unit

SPACES = ["http://opcfoundation.org/UA/", "urn:server", "urn:shopfloor:cnc"]


def test_index_node_ids_pass_through() -> None:
    assert nodeids.resolve("ns=2;s=A.B", SPACES) == ua.NodeId("A.B", 2)
    assert nodeids.resolve("i=2258", []) == ua.NodeId(2258, 0)


def test_namespace_uris_become_the_servers_index() -> None:
    assert nodeids.resolve("nsu=urn:shopfloor:cnc;s=A", SPACES) == ua.NodeId("A", 2)
    assert nodeids.resolve("nsu=urn:server;i=7", SPACES) == ua.NodeId(7, 1)
    unknown = nodeids.resolve("nsu=urn:gone;s=A", SPACES)
    assert unknown.NamespaceIndex == nodeids.MISSING_NAMESPACE
    assert nodeids.needs_namespaces(["ns=2;s=A", "nsu=urn:x;s=B"])
    assert not nodeids.needs_namespaces(["ns=2;s=A"])


@pytest.mark.parametrize("text", ["garbage", "ns=2;x=1", "ns=two;s=A"])
def test_a_malformed_node_id_is_a_config_error(text: str) -> None:
    with pytest.raises(ValidationError, match="not an OPC UA node id"):
        OpcUaTag(name="t", node=text)
