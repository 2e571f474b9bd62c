"""The compiled Avro codec against fastavro and confluent-kafka, on random and edge-case events.

Floats: Avro doubles carry NaN and ±infinity, and so do the models (pydantic
accepts them), so the codec must too. Infinities are part of the random
events; NaN is checked on its own (bit for bit) because NaN != NaN would make
every equality assertion fail.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import types
import typing
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import cache
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from buildkit.contracts import (
    AgentError,
    AgentHeartbeat,
    AgentResult,
    AgentTask,
    Codec,
    Event,
    GitLabEvent,
    ReplicaState,
    TaskStatus,
    event_types,
)
from buildkit.errors import SerializationError

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
EVENT_TYPES = sorted(event_types().values(), key=lambda m: m.__name__)
_header = struct.Struct(">bI")

# -- strategies -------------------------------------------------------------------


def _millis(value: datetime) -> datetime:
    """Avro timestamp-millis keeps whole milliseconds."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


timestamps = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
).map(_millis)
texts = st.text(max_size=40)  # any code point but surrogates (which UTF-8 cannot carry)
longs = st.integers(min_value=LONG_MIN, max_value=LONG_MAX)
doubles = st.floats(allow_nan=False, allow_infinity=True)


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of a model field's type, within what Avro can carry."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return st.none() | strategy_for(inner)
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=4)
    if origin is dict:
        return st.dictionaries(texts, strategy_for(args[1]), max_size=4)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return st.sampled_from(list(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_strategy(annotation)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: texts,
        int: longs,
        float: doubles,
        bool: st.booleans(),
        datetime: timestamps,
    }
    return simple[annotation]


def model_strategy(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Valid instances of ``model``, every field (optional ones included) drawn at random."""
    fields = {name: strategy_for(info.annotation) for name, info in model.model_fields.items()}
    return st.fixed_dictionaries(fields).map(lambda values: model(**values))


any_event = st.sampled_from(EVENT_TYPES).flatmap(model_strategy)

# -- helpers --------------------------------------------------------------------------


@cache
def codec(model: type[BaseModel]) -> Codec:
    return Codec.for_model(model)


@cache
def parsed(model: type[Event]) -> Any:
    return fastavro.parse_schema(model.avro_schema())


@cache
def mock_registry(model: type[Event]) -> tuple[SchemaRegistryClient, int]:
    client = SchemaRegistryClient.new_client({"url": "mock://"})
    schema_id = client.register_schema(
        f"{model.avro_name()}-value", Schema(model.avro_schema_str(), "AVRO")
    )
    return client, schema_id


def wire(schema_id: int, payload: bytes) -> bytes:
    """The Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary."""
    return b"\x00" + schema_id.to_bytes(4, "big") + payload


def fastavro_bytes(model: type[Event], obj: Event) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed(model), obj.model_dump())
    return buf.getvalue()


# -- random events ------------------------------------------------------------------


@given(obj=any_event, schema_id=st.integers(min_value=1, max_value=2**31 - 1))
def test_every_event_round_trips_through_the_confluent_wire_format(
    obj: Event, schema_id: int
) -> None:
    data = wire(schema_id, codec(type(obj)).encode(obj))

    magic, read_id = _header.unpack_from(data)
    decoded = codec(type(obj)).decode(memoryview(data)[5:])

    assert (magic, read_id) == (0, schema_id)
    assert decoded == obj
    assert type(decoded) is type(obj)


@given(obj=any_event)
def test_codec_bytes_equal_fastavro_and_fastavro_reads_them_back(obj: Event) -> None:
    model = type(obj)
    ours = codec(model).encode(obj)

    assert ours == fastavro_bytes(model, obj)
    assert fastavro.schemaless_reader(io.BytesIO(ours), parsed(model)) == obj.model_dump()


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(obj=any_event)
def test_confluent_avro_deserializer_decodes_our_wire_bytes(obj: Event) -> None:
    model = type(obj)
    client, schema_id = mock_registry(model)
    deserializer = AvroDeserializer(client)
    context = SerializationContext(model.avro_name(), MessageField.VALUE)

    value = deserializer(wire(schema_id, codec(model).encode(obj)), context)

    assert value == obj.model_dump()


# -- edge cases ---------------------------------------------------------------------


class Numbers(BaseModel):
    n: int
    maybe: int | None = None
    x: float = 0.0


BOUNDARY_LONGS = [0, -1, 1, 63, -64, 64, -65, 2**31 - 1, -(2**31), 2**32, LONG_MAX, LONG_MIN]


@pytest.mark.parametrize("n", BOUNDARY_LONGS)
def test_longs_round_trip_at_varint_and_64_bit_boundaries(n: int) -> None:
    obj = Numbers(n=n, maybe=n)
    data = codec(Numbers).encode(obj)

    assert codec(Numbers).decode(data) == obj
    buf = io.BytesIO()
    fastavro.schemaless_writer(
        buf, fastavro.parse_schema(Codec.for_model(Numbers).schema), obj.model_dump()
    )
    assert data == buf.getvalue()


@pytest.mark.parametrize("n", [LONG_MAX + 1, LONG_MIN - 1, 2**100, -(2**100)])
def test_longs_outside_64_bits_are_refused(n: int) -> None:
    with pytest.raises(OverflowError, match="does not fit an Avro long"):
        codec(Numbers).encode(Numbers(n=n))


def test_nan_and_infinities_survive_bit_for_bit() -> None:
    for x in (math.nan, math.inf, -math.inf, -0.0, 5e-324):
        data = codec(Numbers).encode(Numbers(n=0, x=x))
        decoded = codec(Numbers).decode(data)
        assert struct.pack("<d", decoded.x) == struct.pack("<d", x)


def test_empty_strings_maps_and_arrays_round_trip() -> None:
    now = _millis(datetime.now(UTC))
    task = AgentTask(task_id="", agent="", inputs={}, parameters_json="", created_at=now)
    event = GitLabEvent(
        event_id="", kind="", labels=[], occurred_at=now, received_at=now, raw_json=""
    )

    for obj in (task, event):
        assert codec(type(obj)).decode(codec(type(obj)).encode(obj)) == obj


def test_unicode_text_and_keys_round_trip() -> None:
    text = "caf\u00e9 \u2603 \u65e5\u672c\u8a9e \U0001f680 \x00 \u202e"
    task = AgentTask(
        task_id=text,
        agent="a",
        inputs={text: text, "": ""},
        created_at=datetime(2024, 2, 29, tzinfo=UTC),
    )

    assert codec(AgentTask).decode(codec(AgentTask).encode(task)) == task


def test_optional_fields_left_none_round_trip() -> None:
    task = AgentTask(task_id="t", agent="a", created_at=datetime(2030, 1, 1, tzinfo=UTC))
    assert task.run_id is None and task.timeout_ms is None

    assert codec(AgentTask).decode(codec(AgentTask).encode(task)) == task


@pytest.mark.parametrize("status", list(TaskStatus))
def test_every_enum_symbol_round_trips_as_the_enum_member(status: TaskStatus) -> None:
    at = datetime(2025, 5, 5, tzinfo=UTC)
    result = AgentResult(task_id="t", agent="a", status=status, started_at=at, finished_at=at)

    decoded = codec(AgentResult).decode(codec(AgentResult).encode(result))

    assert decoded.status is status


def test_nested_record_round_trips_as_its_model() -> None:
    at = datetime(2025, 5, 5, tzinfo=UTC)
    error = AgentError(code="qits.coverage_below_threshold", message="72% < 80%", retryable=True)
    result = AgentResult(
        task_id="t",
        agent="a",
        status=TaskStatus.FAILED,
        error=error,
        metrics={"coverage": 0.72},
        started_at=at,
        finished_at=at + timedelta(milliseconds=1),
    )

    decoded = codec(AgentResult).decode(codec(AgentResult).encode(result))

    assert decoded == result
    assert isinstance(decoded.error, AgentError)


def _heartbeat_bytes() -> bytes:
    beat = AgentHeartbeat(
        agent="doc-sync",
        replica_id="r-\u00e9",
        state=ReplicaState.RUNNING,
        in_flight=3,
        cpu_percent=12.5,
        memory_bytes=2**40,
        sent_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return codec(AgentHeartbeat).encode(beat)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(SerializationError, match="2 unexpected trailing byte"):
        codec(AgentHeartbeat).decode(_heartbeat_bytes() + b"\x00\x00")


def test_every_truncation_is_refused_as_truncated_or_malformed() -> None:
    data = _heartbeat_bytes()
    for cut in range(len(data)):
        with pytest.raises(SerializationError, match=r"AgentHeartbeat.*truncated or malformed"):
            codec(AgentHeartbeat).decode(data[:cut])


def test_a_string_longer_than_the_record_is_refused() -> None:
    class Text(BaseModel):
        s: str

    # The length says 100 bytes but only 3 follow: slicing alone would not notice.
    with pytest.raises(SerializationError, match="needs 97 more byte"):
        codec(Text).decode(b"\xc8\x01abc")


def test_a_negative_length_is_refused_instead_of_looping() -> None:
    class Words(BaseModel):
        words: list[str]

    # A huge item count, then length -1: each item would re-read the same byte for ever.
    data = bytes([0x80, 0x80, 0x80, 0x80, 0x10, 0x01])

    with pytest.raises(SerializationError, match="negative string length"):
        codec(Words).decode(data)


@settings(max_examples=300)
@given(data=st.binary(max_size=64), model=st.sampled_from(EVENT_TYPES))
def test_arbitrary_bytes_decode_or_raise_serialization_error(
    data: bytes, model: type[Event]
) -> None:
    # Anything else (IndexError, a hang) would crash or stall a consumer instead of dead-lettering.
    with contextlib.suppress(SerializationError):
        codec(model).decode(data)
