import torch

from mirasol_edge.config import CombinerConfig, preset
from mirasol_edge.model.combiner import TransformerCombiner


def _one_layer_combiner():
    torch.manual_seed(0)
    return TransformerCombiner(preset("tiny", combiner=CombinerConfig(latents=4, layers=1))).eval()


def test_first_layer_audio_queries_do_not_see_the_video():
    combiner, d = _one_layer_combiner(), 32
    audio, video = torch.randn(1, 5, d), torch.randn(1, 6, d)
    before, _ = combiner(audio, video)
    after, _ = combiner(audio, video + torch.randn_like(video))
    assert torch.equal(before[:, :2], after[:, :2])  # the audio half is blind to the video
    assert not torch.allclose(before[:, 2:], after[:, 2:])


def test_first_layer_video_queries_do_not_see_the_audio():
    combiner, d = _one_layer_combiner(), 32
    audio, video = torch.randn(1, 5, d), torch.randn(1, 6, d)
    before, _ = combiner(audio, video)
    after, _ = combiner(audio + torch.randn_like(audio), video)
    assert torch.equal(before[:, 2:], after[:, 2:])
    assert not torch.allclose(before[:, :2], after[:, :2])
