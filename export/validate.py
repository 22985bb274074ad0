"""Validation of an exported graph: onnx.checker, then ONNX Runtime against PyTorch.

Inputs are fresh random tensors whose symbolic dims differ from the traced ones (see
`Component.checks`). An output passes when  max|ort - torch| <= atol + rtol * max|torch|
for every case; the report gives the max abs error and the relative error max|ort - torch| /
max|torch| of each output, and the limit it was held to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirasol_edge.export.components import Component
from mirasol_edge.runtime import contract


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float  # relative to the output's largest magnitude

    def limit(self, scale: float) -> float:
        return self.atol + self.rtol * scale


# fp32: float reassociation only (seen: ~1e-6 relative). fp16: 11-bit mantissas through a few
# layers (seen: ~1e-3). int8: 8-bit weights and activations in every MatMul, errors of a fraction
# of a percent of a layer's range that add up (seen: up to 2.3e-2 on the small preset).
TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-4),
    "fp16": Tolerance(atol=5e-3, rtol=1e-2),
    "int8": Tolerance(atol=2e-2, rtol=8e-2),
}


class ValidationError(ValueError):
    """An exported graph disagrees with PyTorch (or is not a valid ONNX model)."""


@dataclass(frozen=True)
class OutputCheck:
    output: str
    max_abs: float  # worst over the validation cases
    max_rel: float  # max_abs / max|torch output| of the same case
    limit: float  # the allowed max_abs of that case
    ok: bool

    def line(self) -> str:
        mark = "ok" if self.ok else "FAIL"
        return f"{self.output:<16} max abs {self.max_abs:.2e}  rel {self.max_rel:.2e}  (limit {self.limit:.2e})  {mark}"


def validate_component(component: Component, path: Path, precision: str, seed: int = 0,
                       tolerance: Tolerance | None = None) -> list[OutputCheck]:
    """Check the graph at `path` against `component`'s PyTorch module; ValidationError on disagreement."""
    import onnx
    import onnxruntime as ort

    tolerance = tolerance or TOLERANCES[precision]
    try:
        onnx.checker.check_model(str(path))  # the path form also works past protobuf's 2 GB
    except onnx.checker.ValidationError as e:
        raise ValidationError(f"{component.name}: {path.name} is not a valid ONNX model: {str(e).splitlines()[0]}") from None
    from mirasol_edge.runtime.session import session_options

    session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    _check_signature(component, session)
    rng = np.random.default_rng(seed)
    worst: dict[str, OutputCheck] = {}
    for dims in component.checks:
        feeds = component.sample(dims, rng)
        expected = component.run_torch(feeds)
        got = dict(zip(component.outputs, session.run(list(component.outputs), feeds)))
        for name, want in expected.items():
            if got[name].shape != want.shape:
                raise ValidationError(
                    f"{component.name}: output {name} has shape {got[name].shape} in ONNX Runtime but "
                    f"{want.shape} in PyTorch (dims {dims})."
                )
            err = float(np.abs(got[name].astype(np.float64) - want).max()) if want.size else 0.0
            scale = float(np.abs(want).max()) if want.size else 0.0
            check = OutputCheck(name, err, err / scale if scale else err, tolerance.limit(scale),
                                bool(np.isfinite(err) and err <= tolerance.limit(scale)))
            previous = worst.get(name)
            if previous is None or (previous.ok and not check.ok) or (previous.ok == check.ok and check.max_abs > previous.max_abs):
                worst[name] = check
    checks = list(worst.values())
    for c in checks:
        if not c.ok:
            raise ValidationError(
                f"{component.name}: output {c.output} differs from PyTorch by {c.max_abs:.3g} (relative {c.max_rel:.3g}), "
                f"more than the {precision} tolerance {c.limit:.3g}; the export is not trustworthy."
            )
    return checks


def _check_signature(component: Component, session) -> None:
    """Names, element types and dims exactly as the contract (docs/bundle.md) says, bound by name."""
    faults = contract.signature_faults(component.inputs, component.outputs, session, exact=True)
    if faults:
        raise ValidationError(f"{component.name}: {faults[0]}.")