"""`gateway discover opc.tcp://...`: browse a server and print a device entry `run` accepts.

The pure half (tag names, node id text, the YAML) comes first and is unit-tested; the browse
half opens the session exactly as the driver does (`session.open_client`), so discover fails
with the same clear messages the gateway would log.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import ipaddress
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import yaml
from asyncua import Client, Node, ua
from pydantic import ValidationError

from drivers.opcua import nodeids
from drivers.opcua.config import POLICIES, OpcUaConnection
from drivers.opcua.reasons import reason
from drivers.opcua.session import open_client
from gateway.errors import DeviceUnreachable

EXIT_FAILED = 2
# A browse node class mask is a bit set, but asyncua types it as its (non-flag) NodeClass enum.
OBJECTS_AND_VARIABLES = cast(ua.NodeClass, ua.NodeClass.Object | ua.NodeClass.Variable)
READ_CHUNK = 200  # nodes per Read request: below the MaxNodesPerRead of small PLCs
_NOT_IN_TAG_NAME = re.compile(r"[/#+\s]+")  # the tag name pattern is ^[^/#+\s]+$


class DiscoverError(Exception):
    """Discovery failed; the message is one line that says why."""


@dataclass(frozen=True)
class FoundVariable:
    path: tuple[str, ...]  # browse names from below the root down to the variable
    node: str  # as the config writes it: nsu=<uri>;... or, in namespace 0, i=...
    data_type: str  # e.g. Double, or Double[] for an array
    unit: str | None = None


# --- pure: names, node ids, YAML ---------------------------------------------------------


def tag_name(path: Sequence[str]) -> str:
    """The browse path joined with '.', with what the tag name pattern forbids made '_'
    (empty parts left out)."""
    parts = (_NOT_IN_TAG_NAME.sub("_", part).strip("_") for part in path)
    return ".".join(part for part in parts if part) or "tag"


def unique(names: Iterable[str]) -> list[str]:
    """The names in order, a repeated one suffixed _2, _3, ... (never clashing with another)."""
    taken: set[str] = set()
    out: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}_{n}"
        taken.add(candidate)
        out.append(candidate)
    return out


def node_text(node: ua.NodeId, namespaces: Sequence[str]) -> str:
    """`nsu=<namespace URI>;s=...` (robust to renumbered namespaces), `i=...` in namespace 0."""
    plain = ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType).to_string()
    index = node.NamespaceIndex
    if index == 0 or index >= len(namespaces) or ";" in namespaces[index]:
        return plain  # a URI with ';' could not be parsed back; the index is all there is
    return f"nsu={namespaces[index]};{plain.split(';', 1)[1]}"


def device_name(endpoint: str) -> str:
    """`opcua-10-0-0-7` for an address, the first label of a host name (`plc7` for
    plc7.plant.local): a valid device name that says which machine it came from."""
    host = urlsplit(endpoint).hostname or "server"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return tag_name([host.split(".")[0]])
    return "opcua-" + re.sub(r"[.:]+", "-", host)


def render_device(name: str, connection: dict[str, Any], variables: Sequence[FoundVariable],
                  header: str = "") -> str:
    """A complete `devices:` entry: tags named after their browse path, data type as comment."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"- name: {_quote(name)}", "  driver: opcua", "  mode: poll",
              "  poll_interval: 1s", "  connection:"]
    lines += [f"    {key}: {_quote(value)}" for key, value in connection.items()]
    lines.append("  tags:")
    names = unique(tag_name(v.path) for v in variables)
    for tag, variable in zip(names, variables, strict=True):
        lines.append(f"    - name: {_quote(tag)}")
        lines.append(f"      node: {_quote(variable.node)}  # {variable.data_type}")
        if variable.unit:
            lines.append(f"      unit: {_quote(variable.unit)}")
    return "\n".join(lines) + "\n"


def _quote(value: Any) -> str:
    """One YAML scalar; strings double-quoted, whatever characters a browse name holds."""
    if isinstance(value, bool | int | float):
        return yaml.safe_dump(value).split("\n", 1)[0]
    text = yaml.safe_dump(str(value), default_style='"', allow_unicode=True, width=1 << 30)
    return text.rstrip("\n")


def path_filter(pattern: str | None) -> Callable[[tuple[str, ...]], bool]:
    """A predicate on browse paths: the glob matches the '.'-joined path, case-sensitively."""
    if not pattern:
        return lambda path: True
    return lambda path: fnmatch.fnmatchcase(".".join(path), pattern)


# --- I/O: browsing -----------------------------------------------------------------------


@dataclass
class _Seen:
    path: tuple[str, ...]
    node: ua.NodeId
    units_node: ua.NodeId | None


async def browse(client: Client, root: ua.NodeId, depth: int, namespace: int | None,
                 keep: Callable[[tuple[str, ...]], bool]) -> list[FoundVariable]:
    """Every variable up to `depth` levels below `root` (in `namespace`, else outside
    namespace 0) whose browse path `keep` accepts, with its data type and unit."""
    seen: list[_Seen] = []
    visited: set[ua.NodeId] = {root}

    def wanted(node: ua.NodeId) -> bool:
        return node.NamespaceIndex == namespace if namespace is not None else (
            node.NamespaceIndex != 0)

    async def visit(node: ua.NodeId, path: tuple[str, ...], level: int) -> None:
        for ref in await _children(client.get_node(node)):
            child = ref.NodeId
            if child in visited or (_is(child, ua.ObjectIds.Server) and namespace != 0):
                continue  # the Server object holds the server's own diagnostics, not tags
            visited.add(child)
            child_path = (*path, ref.BrowseName.Name)
            if ref.NodeClass == ua.NodeClass.Variable and wanted(child) and keep(child_path):
                seen.append(_Seen(child_path, child, await _units_property(client, child)))
            if level < depth:
                await visit(child, child_path, level + 1)

    await visit(root, (), 1)
    return await _describe(client, seen, await client.get_namespace_array())


async def _children(node: Node) -> list[ua.ReferenceDescription]:
    """Objects and variables below `node`, not its properties."""
    refs = await node.get_references(ua.ObjectIds.HierarchicalReferences,
                                     ua.BrowseDirection.Forward,
                                     OBJECTS_AND_VARIABLES)
    return [r for r in refs if not _is(r.ReferenceTypeId, ua.ObjectIds.HasProperty)]


async def _units_property(client: Client, node: ua.NodeId) -> ua.NodeId | None:
    props = await client.get_node(node).get_references(ua.ObjectIds.HasProperty,
                                                       ua.BrowseDirection.Forward)
    for ref in props:
        if ref.BrowseName.Name == "EngineeringUnits" and ref.BrowseName.NamespaceIndex == 0:
            return ref.NodeId
    return None


def _is(node: ua.NodeId, standard_id: int) -> bool:
    """Compare with a namespace 0 id whatever the encoding (TwoByte, FourByte, Numeric)."""
    return node.NamespaceIndex == 0 and node.Identifier == standard_id


async def _describe(client: Client, seen: list[_Seen],
                    namespaces: Sequence[str]) -> list[FoundVariable]:
    nodes = [client.get_node(s.node) for s in seen]
    types = await _read(client, nodes, ua.AttributeIds.DataType)
    ranks = await _read(client, nodes, ua.AttributeIds.ValueRank)
    unit_nodes = [client.get_node(s.units_node) for s in seen if s.units_node is not None]
    unit_values = iter(await _read(client, unit_nodes, ua.AttributeIds.Value))
    type_names = await _type_names(client, [t for t in types if isinstance(t, ua.NodeId)])
    found = []
    for s, data_type, rank in zip(seen, types, ranks, strict=True):
        name = type_names.get(data_type, "?") if isinstance(data_type, ua.NodeId) else "?"
        if isinstance(rank, int) and rank >= 1:
            name += "[]"
        units = next(unit_values) if s.units_node is not None else None
        found.append(FoundVariable(s.path, node_text(s.node, namespaces), name,
                                   _unit_symbol(units)))
    return found


async def _read(client: Client, nodes: list[Node], attribute: ua.AttributeIds) -> list[Any]:
    values: list[Any] = []
    for start in range(0, len(nodes), READ_CHUNK):
        answers = await client.read_attributes(nodes[start:start + READ_CHUNK], attribute)
        values += [a.Value.Value if a.Value is not None else None for a in answers]
    return values


async def _type_names(client: Client, types: list[ua.NodeId]) -> dict[ua.NodeId, str]:
    """Standard types by the well-known id, a server's own types by their browse name."""
    names = {t: ua.ObjectIdNames.get(t.Identifier, "?") for t in types
             if t.NamespaceIndex == 0 and isinstance(t.Identifier, int)}
    custom = sorted(set(types) - set(names), key=str)
    browse_names = await _read(client, [client.get_node(t) for t in custom],
                               ua.AttributeIds.BrowseName)
    names.update({t: getattr(b, "Name", "?") for t, b in zip(custom, browse_names, strict=True)})
    return names


def _unit_symbol(units: Any) -> str | None:
    if isinstance(units, ua.EUInformation) and units.DisplayName and units.DisplayName.Text:
        return str(units.DisplayName.Text)
    return None


# --- the command -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="opc.tcp://HOST:PORT[/path]")
    parser.add_argument("--device", default=None,
                        help="device name (default: from the host, e.g. opcua-10-0-0-7)")
    parser.add_argument("--root", default="Objects",
                        help="where to start: Objects or a node id (ns=2;s=Line1, nsu=...)")
    parser.add_argument("--depth", type=_positive, default=6,
                        help="levels below the root (1: its children only)")
    parser.add_argument("--namespace", default=None,
                        help="only this namespace (index or URI); default: every namespace "
                        "but 0 (the server's standard nodes)")
    parser.add_argument("--filter", default=None,
                        help="glob on the '.'-joined browse path, e.g. 'Cnc.Spindle*'")
    parser.add_argument("--timeout", default="4s", help="connect and request timeout")
    security = parser.add_argument_group("security (as in the device's connection config)")
    security.add_argument("--security", default="None", choices=POLICIES)
    security.add_argument("--mode", default="SignAndEncrypt", choices=["Sign", "SignAndEncrypt"])
    security.add_argument("--server-certificate", default=None, help="pin: DER or PEM file")
    security.add_argument("--server-fingerprint", default=None, help="pin: SHA-256 in hex")
    security.add_argument("--trust-any", action="store_true",
                          help="accept any server certificate (trust: any)")
    security.add_argument("--username", default="")
    security.add_argument("--password-env", default=None, metavar="VAR",
                          help="read the password from this environment variable (the "
                          "printed config refers to it as ${VAR})")
    security.add_argument("--pki", default=None, help="the gateway's certificate folder "
                          "(default ./data/pki)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def connection_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `connection:` of the printed device: what was used, secrets as ${VAR}."""
    settings: dict[str, Any] = {"endpoint": args.url}
    if args.security != "None":
        settings.update(security=args.security, mode=args.mode)
    for key in ("server_certificate", "server_fingerprint", "pki", "username"):
        if getattr(args, key):
            settings[key] = getattr(args, key)
    if args.trust_any:
        settings["trust"] = "any"
    if args.password_env:
        settings["password"] = f"${{{args.password_env}}}"
    settings["timeout"] = args.timeout
    return settings


def run(args: argparse.Namespace) -> int:
    """Print the device entry; exit 2 with one line on stderr when it cannot be done."""
    _quiet_libraries()
    try:
        print(asyncio.run(discover(args)), end="", flush=True)
    except DiscoverError as exc:
        print("discover: " + "; ".join(str(exc).splitlines()), file=sys.stderr)
        return EXIT_FAILED
    return 0


def _quiet_libraries() -> None:
    """stdout is the YAML and stderr the verdict: asyncua's warnings (e.g. the ServiceFault
    before a refusal that the verdict explains) and the session's info lines would bury it.
    `--log-level debug` shows everything."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        logging.getLogger("drivers.opcua.session").setLevel(logging.WARNING)


async def discover(args: argparse.Namespace) -> str:
    connection = _connection(args)
    device = args.device or device_name(args.url)
    try:
        client = await open_client(connection, device)
    except DeviceUnreachable as exc:
        raise DiscoverError(str(exc)) from exc
    try:
        namespaces = await client.get_namespace_array()
        root = _root(args.root, namespaces)
        await _require_node(client, root, args.root)
        namespace = _namespace(args.namespace, namespaces)
        variables = await browse(client, root, args.depth, namespace, path_filter(args.filter))
    except (ua.UaError, OSError, TimeoutError) as exc:
        raise DiscoverError(f"{args.url}: browsing failed: "
                            f"{reason(exc, connection.timeout)}") from exc
    finally:
        await _disconnect(client)
    if not variables:
        raise DiscoverError(f"no variables under {args.root} within depth {args.depth}"
                            f"{' matching ' + args.filter if args.filter else ''}")
    header = (f"gateway discover {args.url}: {len(variables)} variable(s) under {args.root}, "
              f"depth {args.depth}\nPaste under `devices:`; rename tags as you like.")
    return render_device(device, connection_settings(args), variables, header)


def _connection(args: argparse.Namespace) -> OpcUaConnection:
    if not args.url.startswith("opc.tcp://"):
        raise DiscoverError(f"{args.url}: only opc.tcp:// URLs can be discovered")
    password = ""
    if args.password_env:
        if args.password_env not in os.environ:
            raise DiscoverError(f"--password-env: ${args.password_env} is not set")
        password = os.environ[args.password_env]
    settings = {**connection_settings(args), "password": password}
    try:
        return OpcUaConnection.model_validate(settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'connection'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise DiscoverError(problems) from exc


def _root(text: str, namespaces: Sequence[str]) -> ua.NodeId:
    if text == "Objects":
        return ua.NodeId(ua.Int32(ua.ObjectIds.ObjectsFolder))
    try:
        uri = getattr(nodeids.parse(text), "NamespaceUri", None)
    except ValueError as exc:
        raise DiscoverError(f"--root: {exc}") from exc
    if uri and uri not in namespaces:
        raise DiscoverError(f"--root: the server has no namespace {uri} "
                            f"(it has {_listed(namespaces)})")
    return nodeids.resolve(text, namespaces)


async def _require_node(client: Client, root: ua.NodeId, text: str) -> None:
    """A root the server does not have is "not found", not an empty browse."""
    try:
        await client.get_node(root).read_node_class()
    except ua.UaStatusCodeError as exc:
        status = ua.StatusCode(exc.code).name
        if status in ("BadNodeIdUnknown", "BadNodeIdInvalid"):
            raise DiscoverError(f"--root {text}: not found on the server ({status})") from exc
        raise


def _namespace(text: str | None, namespaces: Sequence[str]) -> int | None:
    if text is None:
        return None
    if text.isdigit() and int(text) < len(namespaces):
        return int(text)
    if text in namespaces:
        return namespaces.index(text)
    raise DiscoverError(f"--namespace: the server has no namespace {text} "
                        f"(it has {_listed(namespaces)})")


def _listed(namespaces: Sequence[str]) -> str:
    return ", ".join(f"{index}={uri}" for index, uri in enumerate(namespaces))


async def _disconnect(client: Client) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), 2)
    except (ua.UaError, OSError, TimeoutError):
        pass  # the server went away meanwhile: nothing left to close
