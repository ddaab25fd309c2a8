"""A log-mel spectrogram front end on ``torch.stft``: batched, differentiable, CUDA-ready.

``mel_filterbank`` builds the triangular mel filters in numpy with the same algorithm as
``librosa.filters.mel`` (torchaudio is not available here and librosa is optional):
centres equally spaced on the HTK (``2595 log10(1 + f / 700)``) or Slaney (linear below
1 kHz, logarithmic above) mel scale, each filter rising from the previous centre and
falling to the next, optionally area-normalised (``norm="slaney"``).

``LogMel`` maps waveforms (batch, samples) to ``log(mel power + floor)`` of shape
(batch, n_mels, frames) with ``frames = 1 + samples // hop_length`` (centred frames,
reflect padding, a periodic Hann window). It runs in float32 even under autocast and
exports to ONNX (opset >= 17, the ONNX ``STFT`` operator): during export it asks
``torch.stft`` for real/imaginary pairs, since the exporter has no complex tensors.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

MelScale = Literal["htk", "slaney"]

_SLANEY_F_SP = 200.0 / 3  # Hz per mel below the break
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float, scale: MelScale = "slaney") -> np.ndarray:
    """Frequencies in Hz on the mel ``scale``."""
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    mel = hz / _SLANEY_F_SP
    log_part = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(hz, 1e-10) / _SLANEY_MIN_LOG_HZ) / (
        _SLANEY_LOGSTEP
    )
    return np.where(hz >= _SLANEY_MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray | float, scale: MelScale = "slaney") -> np.ndarray:
    """The inverse of ``hz_to_mel``."""
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    hz = mel * _SLANEY_F_SP
    log_part = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mel - _SLANEY_MIN_LOG_MEL))
    return np.where(mel >= _SLANEY_MIN_LOG_MEL, log_part, hz)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: MelScale = "slaney",
    norm: Literal["slaney"] | None = "slaney",
) -> np.ndarray:
    """Triangular mel filters, float32 (n_mels, n_fft // 2 + 1), as librosa builds them.

    Raises:
        ValueError: The frequency range is empty or beyond the Nyquist frequency.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"mel filterbank: need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, "
            f"f_max={f_max}, sample_rate={sample_rate}"
        )
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_points = np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2)
    hz_points = mel_to_hz(mel_points, scale)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":  # each filter's area is the same
        weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """Waveforms (batch, samples) -> log-mel power (batch, n_mels, frames); see the module
    docstring."""

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 256,
        hop_length: int = 64,
        n_mels: int = 32,
        f_min: float = 0.0,
        f_max: float | None = None,
        scale: MelScale = "slaney",
        floor: float = 1e-6,
    ) -> None:
        super().__init__()
        if hop_length < 1 or n_fft < 2 or n_mels < 1:
            raise ValueError(f"LogMel: bad sizes n_fft={n_fft}, hop={hop_length}, n_mels={n_mels}")
        self.n_fft, self.hop_length, self.floor = n_fft, hop_length, floor
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        filters = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, scale)
        self.register_buffer("filters", torch.from_numpy(filters), persistent=False)

    def frames(self, samples: int) -> int:
        """The number of frames of a waveform of ``samples`` samples."""
        return 1 + samples // self.hop_length

    def power(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The STFT power (batch, n_fft // 2 + 1, frames), in float32."""
        x = waveforms.float()
        kwargs = {
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "window": self.window,
            "center": True,
            "pad_mode": "reflect",
        }
        if torch.onnx.is_in_onnx_export():  # ONNX's STFT returns (re, im) pairs
            spec = torch.stft(x, return_complex=False, **kwargs)
        else:
            spec = torch.view_as_real(torch.stft(x, return_complex=True, **kwargs))
        return spec.square().sum(-1)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        with torch.autocast(waveforms.device.type, enabled=False):
            mel = torch.matmul(self.filters, self.power(waveforms))
            return torch.log(mel + self.floor)
