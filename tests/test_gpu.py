"""The CUDA path (CUDA execution provider, IO binding, fp16): run where onnxruntime-gpu sees a GPU,
skipped elsewhere. benchmarks/gpu_check.py is the full check, with timings (BENCHMARKS.md)."""

import numpy as np
import pytest

from runtime_bundles import random_chunk, trained
from mirasol_edge.runtime.session import Runtime, available_providers

pytestmark = [pytest.mark.gpu, pytest.mark.skipif("CUDAExecutionProvider" not in available_providers(),
                                                   reason="needs onnxruntime-gpu and a CUDA GPU")]


def pushed(runtime, chunks):
    stream = runtime.create_stream()
    for chunk in chunks:
        stream.push(*chunk)
    return stream


def test_every_graph_runs_on_cuda_and_the_caches_stay_there():
    _, bundle = trained()
    runtime = Runtime.load(bundle, provider="cuda")
    assert runtime.io_binding
    assert all(p[0] == "CUDAExecutionProvider" for p in runtime.active_providers().values())
    stream = pushed(runtime, [random_chunk(runtime.chunk, np.random.default_rng(k)) for k in range(3)])
    batch = stream.state.batch
    assert {v.device_name().lower() for v in [*batch.temporal.values(), *batch.cross.values()]} == {"cuda"}


def test_cuda_answers_as_the_cpu_does():
    _, bundle = trained()
    chunks = [random_chunk(trained()[0].cfg.chunk, np.random.default_rng(k)) for k in range(4)]
    cpu = pushed(Runtime.load(bundle, intra_op_threads=1), chunks)
    cuda = pushed(Runtime.load(bundle, provider="cuda"), chunks)
    question = "what color is the first shape?"
    assert cuda.ask(question) == cpu.ask(question)
    for name, value in cpu.arrays().items():
        np.testing.assert_allclose(cuda.arrays()[name], value, atol=1e-2, err_msg=name)
