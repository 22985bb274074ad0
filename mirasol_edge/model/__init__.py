"""The Mirasol model in PyTorch: extractors, combiners, temporal and context decoders."""

from mirasol_edge.model.mirasol import MirasolModel, StreamState

__all__ = ["MirasolModel", "StreamState"]
