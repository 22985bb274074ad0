"""Two tiny ONNX graphs that edit caches where they live (GPU memory under IO binding).

Without torch or cupy the runtime has no way to slice or concatenate a tensor that sits on
the GPU, so it runs these with ONNX Runtime instead:
- `keep_last`: cache.{j} -> out.{j} = cache.{j}[:, :, -n:]
- `append_keep_last`: cache.{j}, new.{j} -> out.{j} = concat(cache.{j}, new.{j}, axis=2)[:, :, -n:]
for j < count, all tensors (batch, heads, length, head_dim).

The graphs are written as ONNX protobuf bytes by hand: the `onnx` package is a training
extra and the runtime must not need it. Only the handful of fields these graphs use are here.
"""

from __future__ import annotations

import struct

# onnx.TensorProto.DataType values
ELEM_TYPES = {"tensor(float)": 1, "tensor(uint8)": 2, "tensor(int64)": 7, "tensor(float16)": 10, "tensor(double)": 11}
_INT64 = 7
_INT64_MAX = (1 << 63) - 1
_OPSET = 13  # Slice with tensor inputs, Concat: both unchanged since
_IR_VERSION = 7


# --- protobuf wire format --------------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 are 10-byte two's complement
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return _varint(field << 3 | 2) + _varint(len(value)) + value


# --- ONNX messages (field numbers from onnx/onnx.proto) ---------------------------------


def _value_info(name: str, elem_type: int, dims: tuple[str, ...]) -> bytes:
    shape = b"".join(_bytes(1, _bytes(2, d)) for d in dims)  # TensorShapeProto.dim{dim_param}
    tensor_type = _int(1, elem_type) + _bytes(2, shape)  # TypeProto.Tensor
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))  # ValueInfoProto{name, type{tensor_type}}


def _int64_initializer(name: str, values: list[int]) -> bytes:
    raw = struct.pack(f"<{len(values)}q", *values)
    return _int(1, len(values)) + _int(2, _INT64) + _bytes(8, name) + _bytes(9, raw)  # TensorProto


def _node(op: str, inputs: list[str], outputs: list[str], name: str, axis: int | None = None) -> bytes:
    body = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
    body += _bytes(3, name) + _bytes(4, op)
    if axis is not None:  # AttributeProto{name, i, type = INT (2)}
        body += _bytes(5, _bytes(1, "axis") + _int(3, axis) + _int(20, 2))
    return body


def _model(graph: bytes) -> bytes:
    opset = _bytes(1, "") + _int(2, _OPSET)  # OperatorSetIdProto, default domain
    return _int(1, _IR_VERSION) + _bytes(2, "mirasol-edge-runtime") + _bytes(7, graph) + _bytes(8, opset)


_DIMS = ("batch", "heads", "length", "head_dim")


def keep_last(elem_type: int, count: int, n: int) -> bytes:
    """ModelProto bytes: out.{j} = cache.{j}[:, :, -n:] for j < count."""
    return _cache_graph(elem_type, count, n, append=False)


def append_keep_last(elem_type: int, count: int, n: int) -> bytes:
    """ModelProto bytes: out.{j} = concat(cache.{j}, new.{j}, axis=2)[:, :, -n:] for j < count."""
    return _cache_graph(elem_type, count, n, append=True)


def _cache_graph(elem_type: int, count: int, n: int, append: bool) -> bytes:
    assert n > 0 and count > 0
    nodes, inputs, outputs = [], [], []
    for j in range(count):
        inputs.append(_value_info(f"cache.{j}", elem_type, _DIMS))
        source = f"cache.{j}"
        if append:
            inputs.append(_value_info(f"new.{j}", elem_type, _DIMS))
            source = f"joined.{j}"
            nodes.append(_node("Concat", [f"cache.{j}", f"new.{j}"], [source], f"concat.{j}", axis=2))
        # Slice clamps a start before 0 to 0: shorter caches pass whole.
        nodes.append(_node("Slice", [source, "starts", "ends", "axes"], [f"out.{j}"], f"slice.{j}"))
        outputs.append(_value_info(f"out.{j}", elem_type, _DIMS))
    initializers = [
        _int64_initializer("starts", [-n]),
        _int64_initializer("ends", [_INT64_MAX]),
        _int64_initializer("axes", [2]),
    ]
    graph = b"".join(_bytes(1, node) for node in nodes) + _bytes(2, "append_keep_last" if append else "keep_last")
    graph += b"".join(_bytes(5, t) for t in initializers)
    graph += b"".join(_bytes(11, i) for i in inputs) + b"".join(_bytes(12, o) for o in outputs)
    return _model(graph)
