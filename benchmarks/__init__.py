"""Latency per chunk and per token: PyTorch eager against ONNX Runtime, side by side."""
