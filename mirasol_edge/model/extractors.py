"""Per-chunk feature extractors: audio waveform -> audio tokens, video frames -> video tokens."""

from __future__ import annotations

import os

import math

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from mirasol_edge.config import ModelConfig
from mirasol_edge.model.layers import Encoder

LOG_MEL_FLOOR = 1e-6  # avoids log(0) on silence
LOG_MEL_SHIFT, LOG_MEL_SCALE = 4.0, 4.0  # brings log-mel of speech-level audio to about unit range

# Normalisation of RGB in [0, 1]: ImageNet statistics for our tubelet ViT, Kinetics for torchvision nets.
IMAGE_MEAN, IMAGE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)


class LogMelSpectrogram(nn.Module):
    """waveform (B, S) -> log-mel (B, n_mels, S // hop + 1), as torchaudio's MelSpectrogram (centred,
    reflect-padded, periodic Hann window, power 2, HTK mel scale) but with the STFT written as a
    strided convolution over a windowed DFT basis. ONNX Runtime runs its STFT op as a plain DFT for a
    400-point frame (about 100x slower than this); a convolution is a GEMM everywhere, fp16 and int8
    included, and computes the same numbers in PyTorch and in every ONNX backend."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        with torch.device("cpu"):  # torchaudio's filter bank code is data-dependent, which meta tensors refuse
            bins = n_fft // 2 + 1
            angle = 2 * math.pi * torch.outer(torch.arange(n_fft, dtype=torch.float64), torch.arange(bins, dtype=torch.float64)) / n_fft
            window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)[:, None]
            basis = torch.cat([angle.cos() * window, -angle.sin() * window], dim=1)  # (n_fft, 2 * bins): real, imaginary
            filters = torchaudio.functional.melscale_fbanks(bins, 0.0, sample_rate / 2, n_mels, sample_rate)  # (bins, n_mels)
        # Derived from the config, so not saved in checkpoints.
        self.register_buffer("dft", basis.T.unsqueeze(1).float(), persistent=False)  # (2 * bins, 1, n_fft)
        self.register_buffer("mel_filters", filters.T.contiguous().float(), persistent=False)  # (n_mels, bins)

    def forward(self, waveform: Tensor) -> Tensor:
        device = waveform.device.type
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            # Always fp32: in bf16 the DFT's leakage floor moves by up to 8 log units, so a model trained
            # under autocast learned features that the fp32 inference graphs never show it (RESULTS.md).
            with torch.autocast(device, enabled=False):
                return self.forward(waveform.float())
        x = F.pad(waveform.unsqueeze(1), (self.n_fft // 2, self.n_fft // 2), mode="reflect")  # (B, 1, S + n_fft)
        spectrum = F.conv1d(x, self.dft, stride=self.hop_length)  # (B, 2 * bins, frames)
        real, imag = spectrum.chunk(2, dim=1)
        mel = self.mel_filters @ (real.square() + imag.square())  # (n_mels, bins) @ (B, bins, frames)
        return torch.log(mel + LOG_MEL_FLOOR)


class AudioExtractor(nn.Module):
    """16 kHz mono waveform -> log-mel -> spectrogram-patch transformer -> audio tokens."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        a, d = cfg.audio, cfg.d_model
        self.log_mel = LogMelSpectrogram(cfg.chunk.sample_rate, a.n_fft, a.hop_length, a.n_mels)
        self.patch = nn.Conv2d(1, d, kernel_size=(a.patch_mels, a.patch_frames), stride=(a.patch_mels, a.patch_frames))
        self.position = nn.Parameter(torch.randn(cfg.audio_tokens, d) * 0.02)
        self.encoder = Encoder(d, cfg.n_heads, a.layers, cfg.mlp_ratio)

    def forward(self, waveform: Tensor) -> Tensor:
        """waveform (B, S) float32 -> audio_tokens (B, Na, D)."""
        x = (self.log_mel(waveform) + LOG_MEL_SHIFT) / LOG_MEL_SCALE  # (B, n_mels, frames)
        x = self.patch(x.unsqueeze(1))  # (B, 1, n_mels, frames) -> (B, D, n_mels/pm, frames/pf)
        x = x.flatten(2).transpose(1, 2)  # (B, Na, D)
        return self.encoder(x + self.position)


class VideoExtractor(nn.Module):
    """uint8 RGB frames -> normalisation -> tubelet transformer (or torchvision net) -> video tokens."""

    def __init__(self, cfg: ModelConfig, backbone_weights: str | None = None):
        super().__init__()
        v, d = cfg.video, cfg.d_model
        self.backbone_name = v.backbone
        if v.backbone == "tubelet" and backbone_weights is not None:
            raise ValueError("backbone weights need a torchvision video backbone (r3d_18, r2plus1d_18 or mc3_18); "
                             "the tubelet extractor has none.")
        if v.backbone == "tubelet":
            mean, std = IMAGE_MEAN, IMAGE_STD
            # A convolutional stem (two 3x3, stride-2 convolutions per frame) before the tubelet patches:
            # locality and a pixel-level nonlinearity, which Xiao et al. ("Early convolutions help
            # transformers see better", 2021) found makes ViTs train faster; on our task the gain
            # over one linear patch projection was within noise (RESULTS.md).
            c = max(16, d // 4)  # 8 random channels merged green and blue in the tiny model for good
            self.stem = nn.Sequential(
                nn.Conv3d(3, c, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), nn.GELU(),
                nn.Conv3d(c, 2 * c, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), nn.GELU(),
            )
            size = (v.tubelet_frames, v.patch_size // 4, v.patch_size // 4)
            self.patch = nn.Conv3d(2 * c, d, kernel_size=size, stride=size)
            self.position = nn.Parameter(torch.randn(cfg.video_tokens, d) * 0.02)
            self.encoder = Encoder(d, cfg.n_heads, v.layers, cfg.mlp_ratio)
        else:
            mean, std = KINETICS_MEAN, KINETICS_STD
            self.backbone = _torchvision_backbone(v.backbone, backbone_weights)
            self.project = nn.Linear(512, d)  # r3d/mc3/r2plus1d end in 512 channels
            self.norm = nn.LayerNorm(d)
        # (x / 255 - mean) / std as one multiply-add per channel plane
        self.register_buffer("scale", (1 / (255 * torch.tensor(std))).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: Tensor) -> Tensor:
        """frames (B, F, H, W, 3) uint8 -> video_tokens (B, Nv, D)."""
        b, f, h, w, _ = frames.shape
        # Frame by frame, channels first: (B, F, H, W, 3) -> (B*F, 3, H, W), normalised. (ONNX Runtime
        # broadcasts over whole channel planes fast, over a last axis of 3 slowly: 12x on the same op.)
        x = frames.permute(0, 1, 4, 2, 3).reshape(b * f, 3, h, w).float() * self.scale + self.shift
        if self.backbone_name == "tubelet":
            x = self._stem(x)  # (B*F, 2c, H/4, W/4)
            x = x.reshape(b, f, *x.shape[1:]).transpose(1, 2)  # (B, 2c, F, H/4, W/4)
            x = self.patch(x)  # (B, D, F/t, H/p, W/p)
            x = x.flatten(2).transpose(1, 2)  # (B, Nv, D)
            return self.encoder(x + self.position)
        x = x.reshape(b, f, 3, h, w).transpose(1, 2)  # (B, 3, F, H, W)
        x = self.backbone(x).flatten(2).transpose(1, 2)  # (B, 512, t, h, w) -> (B, t*h*w, 512)
        return self.norm(self.project(x))

    def _stem(self, x: Tensor) -> Tensor:
        """Frames (N, 3, H, W) -> (N, 2c, H/4, W/4). The stem's (1, 3, 3) 3-D convolutions run as the
        2-D ones they are (the same weights and numbers): ONNX Runtime's 2-D convolutions are faster."""
        for layer in self.stem:
            if isinstance(layer, nn.Conv3d):
                x = F.conv2d(x, layer.weight.squeeze(2), layer.bias, stride=layer.stride[1:], padding=layer.padding[1:])
            else:
                x = layer(x)
        return x


def _torchvision_backbone(name: str, weights_path: str | None) -> nn.Module:
    """A torchvision video ResNet without its pooling and classifier; weights from a local file only.

    The file is checked name by name and shape by shape before loading, each fault a ValueError
    naming it (load_state_dict would raise a RuntimeError on a wrong shape).
    """
    import torchvision.models.video as tv

    if name not in ("r3d_18", "mc3_18", "r2plus1d_18"):
        raise ValueError(f"unknown video backbone {name!r}; use tubelet, r3d_18, mc3_18 or r2plus1d_18.")
    net = getattr(tv, name)(weights=None)  # never downloads
    if weights_path is not None:
        if not os.path.isfile(weights_path):
            raise ValueError(f"video backbone weights {weights_path} do not exist; give a local state dict of "
                             f"torchvision's {name} (nothing is downloaded).")
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle, zip and unpickler errors all mean "not a state dict"
            raise ValueError(f"{weights_path} is not a PyTorch state dict ({type(e).__name__}); give the .pth "
                             f"weights of torchvision's {name}.") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{weights_path} is not a state dict (a dict of tensors); save the weights with "
                             f"torch.save(net.state_dict(), path).")
        expected = net.state_dict()
        faults = [f"{what} {', '.join(keys[:2])}" for what, keys in (
            ("missing", [k for k in expected if k not in state and not k.startswith("fc.")]),  # the classifier is dropped
            ("unexpected", [k for k in state if k not in expected]),
            ("wrong shape", sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)),
        ) if keys]
        if faults:
            raise ValueError(f"{weights_path} is not a state dict of torchvision's {name} ({'; '.join(faults)}); "
                             f"give weights of that very net or pick its --video-backbone.")
        net.load_state_dict(state, strict=False)
    return nn.Sequential(net.stem, net.layer1, net.layer2, net.layer3, net.layer4)
