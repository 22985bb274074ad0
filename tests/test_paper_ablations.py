"""benchmarks/paper.py: every ablation variant builds, trains a step and answers (the `small` preset)."""

import pytest
import torch

from mirasol_edge.batching import collate_clips
from mirasol_edge.benchmarks.paper import VARIANTS, build, flops_and_state
from mirasol_edge.data.dataset import SyntheticDataset
from mirasol_edge.train.loss import clip_batch_loss


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_variant_takes_a_training_step(variant):
    torch.set_num_threads(1)
    model, media = build(variant)
    data = SyntheticDataset(model.cfg.chunk, 2, seed=0, questions_per_clip=2, durations=[4])
    batch = collate_clips([data[0], data[1]], model.cfg)
    batch["waveform"], batch["frames"] = media(batch["waveform"], batch["frames"])
    loss = clip_batch_loss(model, batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    gflops, state = flops_and_state(variant, model, 4)
    assert gflops > 0 and (state is None) == (variant == "one-chunk")


def test_ablated_inputs_are_gone():
    _, video_only = build("video-only")
    _, audio_only = build("audio-only")
    waveform, frames = torch.ones(1, 2, 3), torch.ones(1, 2, 4, dtype=torch.uint8)
    assert video_only(waveform, frames)[0].abs().sum() == 0 and video_only(waveform, frames)[1].sum() > 0
    assert audio_only(waveform, frames)[1].sum() == 0 and audio_only(waveform, frames)[0].abs().sum() > 0


def test_without_the_temporal_decoder_chunks_do_not_see_each_other():
    model, _ = build("no-temporal")
    latents = torch.randn(1, 3 * model.cfg.combiner.latents, model.cfg.d_model)
    changed = latents.clone()
    changed[:, -1] += 1  # the last chunk only
    m = model.cfg.combiner.latents
    with torch.no_grad():
        a, b = model.temporal_decoder(latents), model.temporal_decoder(changed)
    assert torch.equal(a[:, : 2 * m], b[:, : 2 * m]) and not torch.equal(a[:, 2 * m :], b[:, 2 * m :])
