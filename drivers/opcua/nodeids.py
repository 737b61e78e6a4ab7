"""Node ids as written in the config: `ns=2;s=...` or, robust to a server renumbering its
namespaces after an update, `nsu=<namespace URI>;s=...` resolved against the server's
NamespaceArray at every connect."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from asyncua import ua

log = logging.getLogger(__name__)

MISSING_NAMESPACE = 65535  # no server uses it: reads come back BadNodeIdUnknown


def parse(text: str) -> ua.NodeId:
    """Parse a node id string, or raise ValueError saying what a node id looks like."""
    try:
        return ua.NodeId.from_string(text)
    except (ua.UaStringParsingError, ValueError) as exc:
        raise ValueError(f"not an OPC UA node id: {text!r} (e.g. ns=2;s=Spindle.Speed, i=2258 "
                         "or nsu=urn:vendor:machine;s=Spindle.Speed)") from exc


def needs_namespaces(texts: Sequence[str]) -> bool:
    return any(t.startswith("nsu=") for t in texts)


def resolve(text: str, namespaces: Sequence[str]) -> ua.NodeId:
    """The NodeId to send; an unknown namespace URI yields a node the server will call unknown."""
    node = parse(text)
    uri = getattr(node, "NamespaceUri", None)
    if not uri:
        return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)
    if uri in namespaces:
        return ua.NodeId(node.Identifier, ua.Int16(namespaces.index(uri)), node.NodeIdType)
    log.warning("node %s: the server has no namespace %s", text, uri)
    return ua.NodeId(node.Identifier, ua.Int16(MISSING_NAMESPACE), node.NodeIdType)
