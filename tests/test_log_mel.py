import torch
import torchaudio

from mirasol_edge.model.extractors import LOG_MEL_FLOOR, LogMelSpectrogram


def test_log_mel_equals_torchaudio_mel_spectrogram():
    waveform = torch.randn(2, 16_000) * 0.3
    ours = LogMelSpectrogram(16_000, n_fft=400, hop_length=160, n_mels=32)(waveform)
    reference = torchaudio.transforms.MelSpectrogram(16_000, n_fft=400, hop_length=160, n_mels=32)(waveform)
    assert ours.shape == reference.shape == (2, 32, 101)
    assert (ours - torch.log(reference + LOG_MEL_FLOOR)).abs().max() < 1e-3


def test_log_mel_stays_fp32_under_bf16_autocast():
    # Training runs under autocast; the exported graphs compute the front end in fp32, so must training.
    log_mel = LogMelSpectrogram(16_000, n_fft=400, hop_length=160, n_mels=32)
    t = torch.arange(16_000) / 16_000
    waveform = (0.5 * torch.sin(2 * torch.pi * 800 * t) * (t < 0.1))[None]  # a beep, then silence
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = log_mel(waveform)
    assert under_amp.dtype == torch.float32
    assert torch.equal(under_amp, log_mel(waveform))
