import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from hypothesis import given
from hypothesis import strategies as st

from drivers.opcua.planning import (
    ServerDeadband,
    chunked,
    handle_of,
    index_of,
    item_request,
    limit_of,
    retry_unfiltered,
    server_deadband,
)

pytestmark = pytest.mark.unit


def test_twenty_five_nodes_with_a_limit_of_ten_make_three_reads() -> None:
    assert [len(c) for c in chunked(list(range(25)), 10)] == [10, 10, 5]


def test_zero_means_one_call_for_everything() -> None:
    assert chunked(list(range(25)), 0) == [list(range(25))]


def test_nothing_to_read_makes_no_call() -> None:
    assert chunked([], 10) == []
    assert chunked([], 0) == []


@pytest.mark.parametrize("value", [None, -1, 2.5, "10", True])
def test_a_missing_or_odd_limit_is_unlimited(value: object) -> None:
    assert limit_of(value) == 0


def test_a_positive_limit_is_kept() -> None:
    assert limit_of(1000) == 1000


@given(st.lists(st.integers(), max_size=200), st.integers(min_value=0, max_value=50))
def test_chunks_keep_order_and_respect_the_limit(items: list[int], limit: int) -> None:
    chunks = chunked(items, limit)
    assert [x for c in chunks for x in c] == items
    assert all(c for c in chunks)
    if limit:
        assert all(len(c) <= limit for c in chunks)
        assert len(chunks) == -(-len(items) // limit)
    else:
        assert len(chunks) == (1 if items else 0)


def test_a_tag_deadband_overrides_the_devices() -> None:
    assert server_deadband(0.5, None, 2.0, "percent") == ServerDeadband(0.5, "percent")
    assert server_deadband(None, "absolute", 2.0, "percent") == ServerDeadband(2.0, "absolute")
    assert server_deadband(None, None, None, "absolute") is None
    assert server_deadband(0, None, 2.0, "absolute") is None


def test_a_refused_filter_is_retried_without_it_only_when_inherited() -> None:
    request = item_request(3, ua.NodeId("x", 2), ServerDeadband(1.0), 10, 0.0)
    refused = ua.StatusCode(ua.StatusCodes.BadFilterNotAllowed)
    retry = retry_unfiltered(request, refused, inherited=True)
    assert retry is not None
    assert not isinstance(retry.RequestedParameters.Filter, ua.DataChangeFilter)
    assert retry.RequestedParameters.ClientHandle == request.RequestedParameters.ClientHandle
    assert retry.ItemToMonitor == request.ItemToMonitor
    assert retry_unfiltered(request, refused, inherited=False) is None
    unknown = ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
    assert retry_unfiltered(request, unknown, inherited=True) is None


@pytest.mark.parametrize(("kind", "expected"), [("absolute", ua.DeadbandType.Absolute),
                                                 ("percent", ua.DeadbandType.Percent)])
def test_a_deadband_becomes_a_data_change_filter(kind: str, expected: ua.DeadbandType) -> None:
    request = item_request(4, ua.NodeId("x", 2), ServerDeadband(1.5, kind), 10, 250.0)
    params = request.RequestedParameters
    assert params.Filter == ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                                DeadbandType=expected, DeadbandValue=1.5)
    assert (params.ClientHandle, params.QueueSize, params.SamplingInterval) == (5, 10, 250.0)
    assert index_of(params.ClientHandle) == 4


def test_no_deadband_sends_no_filter() -> None:
    flt = item_request(0, ua.NodeId("x", 2), None, 1, 0.0).RequestedParameters.Filter
    assert not isinstance(flt, ua.DataChangeFilter)


def test_the_request_encodes_as_opc_ua_binary() -> None:
    request = item_request(0, ua.NodeId("x", 2), ServerDeadband(1.0, "percent"), 1, 0.0)
    decoded = struct_from_binary(ua.MonitoredItemCreateRequest,
                                 Buffer(struct_to_binary(request)))
    assert decoded.RequestedParameters.Filter.DeadbandType == ua.DeadbandType.Percent


@given(st.integers(min_value=0, max_value=2**31))
def test_handles_map_back_to_their_tag(index: int) -> None:
    assert handle_of(index) > 0 and index_of(handle_of(index)) == index
