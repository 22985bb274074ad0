"""torch -> ONNX: one exporter per component, the bundle writer, validation against PyTorch."""
