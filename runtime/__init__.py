"""The torch-free side of mirasol-edge: media decoding, chunking, tokenizing, and
(in later modules) ONNX Runtime sessions and streaming generation.

Nothing under this package may import torch.
"""
