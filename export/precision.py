"""fp16 and int8 variants of an exported fp32 graph; the graph's inputs and outputs stay as they are.

Some nodes stay fp32 in both: the audio front end (DFT -> power -> mel -> log) and the rotary
angles (position x frequency -> cos, sin), i.e. the nodes a Log, Sin or Cos depends on (tiny in
FLOPs). In fp16 a power spectrum overflows (|X|^2 of a loud 400-sample frame passes 65504), a DFT
basis rounded to fp16 leaks a loud tone into every frequency bin, and a chunk position in the
thousands times a frequency keeps ~3 digits. In int8, a mel filter bank applied as the quantised
side of a MatMul shares one activation scale with the whole spectrum, so quiet bins round to 0
before the log (10-100% error on the audio tokens when torchaudio's `spec @ fb` was quantised).
int8 quantises MatMul/Gemm weights only (dynamic quantisation, activations quantised on the fly);
convolutions stay fp32.
"""

from __future__ import annotations

from pathlib import Path

import onnx

SENSITIVE_OPS = ("Log", "Sin", "Cos")  # these and everything they depend on stay fp32


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that stay fp32: each Log/Sin/Cos node and all the nodes it depends on."""
    producer = {out: node for node in model.graph.node for out in node.output}
    keep: dict[str, onnx.NodeProto] = {}
    todo = [n for n in model.graph.node if n.op_type in SENSITIVE_OPS]
    while todo:
        node = todo.pop()
        if node.name in keep:
            continue
        keep[node.name] = node
        todo.extend(producer[i] for i in node.input if i in producer)
    return sorted(keep)


def _load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))  # external weights (next to the graph) are loaded too


def _save(model: onnx.ModelProto, path: Path, external_data: bool) -> None:
    if external_data:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def to_fp16(src: Path, dst: Path, external_data: bool) -> int:
    """Write the fp16 variant of `src` to `dst` (fp32 inputs and outputs); returns the nodes kept fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = _load(src)
    keep = fp32_nodes(model)
    weights = {t.name: _copy(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    # Shape inference serialises the model, which protobuf refuses past 2 GB.
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep, disable_shape_infer=external_data)
    _undo_fp16_round_trips(half.graph, weights)
    _drop_duplicate_definitions(half.graph)
    _sort_topologically(half.graph)
    _save(half, dst, external_data)
    return len(keep)


def _copy(tensor: onnx.TensorProto) -> onnx.TensorProto:
    out = onnx.TensorProto()
    out.CopyFrom(tensor)
    return out


def _undo_fp16_round_trips(graph: onnx.GraphProto, weights: dict[str, onnx.TensorProto]) -> None:
    """Make the blocked nodes really fp32. The converter wraps each blocked node alone in casts,
    so a value going from one blocked node to the next passes through fp16 (fp32 -> fp16 -> fp32),
    and a blocked node's weights are stored fp16 and cast back. Both lose what the blocked nodes
    need: a DFT basis rounded to fp16 leaks a pure tone into every frequency bin (14% error on the
    audio tokens of a 440 Hz tone). Here each such pair of casts is bypassed, and each weight cast
    back to fp32 is replaced by its original fp32 values."""
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    producer = {out: n for n in graph.node for out in n.output}
    initializers = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    rename, dead = {}, set()
    for node in graph.node:
        if node.op_type != "Cast" or _cast_to(node) != onnx.TensorProto.FLOAT or node.output[0] in outputs:
            continue
        source = node.input[0]
        first = producer.get(source)
        if first is not None and first.op_type == "Cast" and _cast_to(first) == onnx.TensorProto.FLOAT16 \
                and types.get(first.input[0]) == onnx.TensorProto.FLOAT:
            rename[node.output[0]] = first.input[0]  # fp32 -> fp16 -> fp32: use the fp32 value
            dead.add(id(node))
        elif source in initializers and source in weights:
            restored = _copy(weights[source])
            restored.name = node.output[0]  # the cast's output becomes the original fp32 weight
            graph.initializer.append(restored)
            dead.add(id(node))
    kept = [n for n in graph.node if id(n) not in dead]
    for n in kept:
        for i, name in enumerate(n.input):
            n.input[i] = rename.get(name, name)
    # Drop the casts and fp16 weights nothing reads any more.
    while True:
        used = {i for n in kept for i in n.input} | outputs
        unused = [n for n in kept if n.op_type == "Cast" and not set(n.output) & used]
        if not unused:
            break
        kept = [n for n in kept if n not in unused]
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in kept for i in n.input}
    alive = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(alive)


def _drop_duplicate_definitions(graph: onnx.GraphProto) -> None:
    """Keep once each value defined twice: a weight that several blocked nodes share can come out of
    the conversion with its fp32 cast defined twice, as a cast and as the restored fp32 weight (torch
    2.11's export of the base preset's audio front end: 'Duplicate definition of name
    (val_12_cast_to_fp32)', which ONNX Runtime refuses to load). Identical copies are kept once; a
    cast to fp32 of a value also restored as a weight gives way to the weight."""
    defined: dict[str, bytes] = {}
    initializers = []
    for t in graph.initializer:
        if t.name in defined:
            assert defined[t.name] == t.SerializeToString(), f"{t.name} is defined twice with different values"
            continue
        defined[t.name] = t.SerializeToString()
        initializers.append(t)
    weights = set(defined)
    nodes = []
    for n in graph.node:
        same = n.__class__()
        same.CopyFrom(n)
        same.name = ""  # the converter names each copy apart
        definition = same.SerializeToString()
        if n.op_type == "Cast" and _cast_to(n) == onnx.TensorProto.FLOAT and n.output[0] in weights:
            continue  # X_cast_to_fp32 also restored as X's original fp32 values: keep those
        if n.output and all(o in defined for o in n.output):
            assert all(defined[o] == definition for o in n.output), f"{n.output[0]} is defined twice differently"
            continue
        nodes.append(n)
        defined.update(dict.fromkeys(n.output, definition))
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.node[:]
    graph.node.extend(nodes)


def _cast_to(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "to")


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after its inputs' producers (the converter appends the input
    casts it adds for blocked nodes at the end, which onnx.checker rejects). Kahn's algorithm,
    stable: nodes keep their order where it is already valid."""
    import heapq

    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    waiting = [0] * len(nodes)  # inputs each node still waits for
    consumers: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in set(n.input):
            if name in producer:
                waiting[i] += 1
                consumers.setdefault(producer[name], []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in consumers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    assert len(order) == len(nodes), "the graph has a cycle"
    sorted_nodes = [onnx.NodeProto() for _ in order]
    for dst, i in zip(sorted_nodes, order):
        dst.CopyFrom(nodes[i])
    del graph.node[:]
    graph.node.extend(sorted_nodes)


def to_int8(src: Path, dst: Path, external_data: bool) -> int:
    """Write the int8 (dynamically quantised MatMul/Gemm weights) variant of `src` to `dst`."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = fp32_nodes(onnx.load(str(src), load_external_data=False))
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser logs a line per skipped node
    try:
        quantize_dynamic(
            src, dst,
            op_types_to_quantize=["MatMul", "Gemm"],
            # U8S8 (uint8 activations, int8 weights): ORT's recommended default for dynamic quantisation.
            weight_type=QuantType.QInt8,
            per_channel=True,  # one scale per output column: rows of different magnitude keep their precision
            # 7-bit weights: without AVX-512 VNNI (AVX2 machines, e.g. AMD Zen 3) the U8S8 kernels add pairs of
            # products in saturating int16, which 8-bit weights overflow (28 % error on the audio tokens seen);
            # 7 bits keep every pair in range, at the cost of one bit of weight precision.
            reduce_range=True,
            nodes_to_exclude=keep,
            use_external_data_format=external_data,
        )
    finally:
        logging.getLogger().setLevel(level)
    return len(keep)
