import torch
import torchaudio

from mirasol_edge.model.extractors import LOG_MEL_FLOOR, LogMelSpectrogram


def test_log_mel_equals_torchaudio_mel_spectrogram():
    waveform = torch.randn(2, 16_000) * 0.3
    ours = LogMelSpectrogram(16_000, n_fft=400, hop_length=160, n_mels=32)(waveform)
    reference = torchaudio.transforms.MelSpectrogram(16_000, n_fft=400, hop_length=160, n_mels=32)(waveform)
    assert ours.shape == reference.shape == (2, 32, 101)
    assert (ours - torch.log(reference + LOG_MEL_FLOOR)).abs().max() < 1e-3
