"""Hypothesis helpers: fill any protobuf message with generated values, driven by its descriptor."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

INT_RANGES = {
    # The range of each protobuf integer type (shared with the gRPC fuzzer, tests/e2e/grpc_fuzz.py).
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        # Defaults and edges matter most: mix them in with any value.
        return st.one_of(st.sampled_from([0, 1, low, high]), st.integers(low, high))
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.one_of(st.sampled_from([0.0, -0.0, 1e-9, 1e300]), st.floats(allow_nan=True, allow_infinity=True))
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.just(""), st.text(max_size=30))
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=20)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        numbers = [v.number for v in field.enum_type.values]
        # An unknown number (from a newer peer) too.
        return st.sampled_from([*numbers, max(numbers) + 7])
    raise AssertionError(f"unhandled field type {kind}")


def _fill_wkt(message: Message, data: st.DataObject) -> None:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        seconds = data.draw(st.one_of(st.sampled_from([0, 1_760_000_000, -1]), st.integers(-62135596800, 253402300799)))
        nanos = data.draw(st.sampled_from([0, 1_000_000, 123_000, 5, 999_999_999]))
        message.seconds, message.nanos = seconds, nanos  # type: ignore[attr-defined]
    else:  # Duration: seconds and nanos of the same sign
        seconds = data.draw(st.integers(0, 315_576_000_000))
        nanos = data.draw(st.sampled_from([0, 1_000_000, 500_000_000, 1000, 1]))
        sign = data.draw(st.sampled_from([1, -1]))
        message.seconds, message.nanos = sign * seconds, sign * nanos  # type: ignore[attr-defined]


def fill(message: Message, data: st.DataObject, depth: int = 0) -> Message:
    """Set a generated subset of ``message``'s fields (recursively, bounded depth); returns it."""
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    if descriptor.full_name.startswith("google.protobuf."):
        _fill_wkt(message, data)
        return message
    for field in descriptor.fields:
        if field.containing_oneof is not None and not field.has_presence:
            continue
        if field.containing_oneof is not None and field.containing_oneof.name != field.name:
            # A real oneof: set each member with a small chance; the last one set wins.
            if not data.draw(st.booleans()):
                continue
        elif not data.draw(st.integers(0, 3)):  # leave about a quarter of fields unset
            continue
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if field.is_repeated:
            count = data.draw(st.integers(0, 2 if depth < 2 else 0))
            container: Any = getattr(message, field.name)
            for _ in range(count):
                if is_message:
                    fill(container.add(), data, depth + 1)
                else:
                    container.append(data.draw(_scalar(field)))
        elif is_message:
            if depth < 3:
                fill(getattr(message, field.name), data, depth + 1)
        else:
            setattr(message, field.name, data.draw(_scalar(field)))
    return message
