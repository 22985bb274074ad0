"""A clip pack gives back the decoded clips and their questions bit for bit (the GPU check evaluates from one)."""

import numpy as np

from mirasol_edge.benchmarks.clip_pack import pack_clips, unpack_clips
from mirasol_edge.scoring import Question


def test_a_pack_gives_back_every_clip_as_it_went_in(tmp_path):
    rng = np.random.default_rng(0)
    clips = [(f"clip{k}.mp4", rng.integers(0, 256, (k + 1, 2, 8, 8, 3), dtype=np.uint8),
              rng.standard_normal((k + 1, 40)).astype(np.float32),
              [Question(f"q{k}?", f"a{k}", "video", "video_colour")]) for k in range(3)]
    pack_clips(clips, tmp_path / "pack.npz")
    back = list(unpack_clips(tmp_path / "pack.npz"))
    assert [c[0] for c in back] == [c[0] for c in clips]
    for (_, f, w, q), (_, f2, w2, q2) in zip(clips, back):
        assert f2.dtype == np.uint8 and w2.dtype == np.float32
        np.testing.assert_array_equal(f2, f)
        np.testing.assert_array_equal(w2, w)
        assert list(q2) == list(q)
