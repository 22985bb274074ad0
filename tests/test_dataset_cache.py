"""ManifestDataset's cache of decoded clips: a cached clip is not decoded again, and is what a decode gives."""

import numpy as np
import pytest

import mirasol_edge.runtime.media as media
from conftest import tiny_config
from mirasol_edge.data.dataset import ManifestDataset
from mirasol_edge.data.synth import write_dataset

SPEC = tiny_config().chunk


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n_clips=3, seed=5, spec=SPEC, min_seconds=4, max_seconds=5, progress=False)


@pytest.fixture
def decodes(monkeypatch):
    """The files read_clip decodes, in order (it still decodes them)."""
    paths = []
    real = media.read_clip

    def counting(path, spec, **options):
        paths.append(path)
        return real(path, spec, **options)

    monkeypatch.setattr(media, "read_clip", counting)
    return paths


def test_a_cached_clip_is_decoded_once_and_equals_a_fresh_decode(manifest, decodes):
    ds = ManifestDataset(manifest, SPEC, questions_per_clip=2, cache_clips=3)
    first = ds[1]
    again = ds[1 + len(ds)]  # the next epoch's draw of the same file
    assert decodes == [ds.videos[1]]
    assert again[0].frames is first[0].frames and again[0].waveform is first[0].waveform
    frames, waveform = media.read_clip(ds.videos[1], SPEC)
    np.testing.assert_array_equal(again[0].frames, frames)
    np.testing.assert_array_equal(again[0].waveform, waveform)


def test_the_cache_keeps_the_most_recently_used_clips(manifest, decodes):
    ds = ManifestDataset(manifest, SPEC, cache_clips=2)
    for i in (0, 1, 0, 2):  # 2 pushes out 1, the least recently used; 0 stays
        ds.clip(i)
    assert decodes == [ds.videos[0], ds.videos[1], ds.videos[2]]
    ds.clip(0)
    ds.clip(1)
    assert decodes[3:] == [ds.videos[1]]


def test_without_a_cache_every_read_decodes(manifest, decodes):
    ds = ManifestDataset(manifest, SPEC)
    ds.clip(0)
    ds.clip(0)
    assert decodes == [ds.videos[0], ds.videos[0]]
