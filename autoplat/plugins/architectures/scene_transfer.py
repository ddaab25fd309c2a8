"""Audio-visual scene transfer (Li, Wang, Huang, Owens, Anumanchipalli): re-render a clip
as if recorded in the scene of an audio-visual condition clip, by conditional latent
diffusion on log-mel spectrograms.

Data: ``av-scenes`` or ``av-folder`` splits ``(clean, in_scene, cond_audio, cond_frame,
scene, video)`` (autoplat/plugins/datasets/av_scenes.py). The model learns, self-
supervised, to recover ``in_scene`` from ``clean`` given another clip of the same video.

Model (``SceneTransferModel``, a ``LatentDiffusionModel`` with the same stages):

1. ``LogMel`` (autoplat/plugins/audio/frontend.py) turns waveforms into log-mel
   spectrograms, cropped to a multiple of the latent grid and scaled to about [0, 1] by
   the 0.1 and 99.9 percentiles of the training spectrograms (``mel_low``, ``mel_high``).
2. ``KLAutoencoder`` (latent_diffusion.py), trained with ``train_autoencoder`` on clean
   and in-scene spectrograms, then frozen.
3. A denoiser whose input is the noisy latent of the target concatenated with the latent
   of the clean input (``SceneDenoiser``): diffusers' ``UNet2DModel`` whose time embedding
   gets the condition vector added and modulates every ResNet block by scale and shift
   (FiLM; ``ConditionalUNet``) or the DiT with the condition in place of the class
   embedding (adaLN-Zero; ``ConditionalDiT``).
4. The condition encoder (``ConditionEncoder``): a conv net over the condition clip's
   log-mel pooled over time (mean and std per frequency band) and one over its frame
   (mean and std per channel), summed and mixed. ``condition`` selects what it sees:
   "audio-visual", "audio", "visual" or "none" (always the null condition).

Training: the autoencoder for ``ae_epochs``, then the denoiser and the condition encoder
together for ``epochs`` on the noise-prediction MSE (diffusers' ``DDPMScheduler``), the
condition replaced by a learned null vector with probability ``cfg_dropout``, with an
``EMA`` of their weights (what samples and is kept). Sampling: diffusers' ``DDIMScheduler``
(``sample_steps``) with classifier-free guidance ``eps_null + guidance_scale * (eps_cond -
eps_null)``, decoded to log-mel, then Griffin-Lim (``griffin_lim``: mel to linear by
non-negative least squares, then fast Griffin-Lim on ``torch.stft``) to waveforms.

Metrics (``test_*`` on the last epoch; ``val_denoise_loss`` every epoch, the other ``val_*``
every ``eval_every`` epochs (0: the last only; sampling is what costs); ``eval_clips``
clips, the same initial noise for every variant; a scheduler that stops trials early on a
transfer metric needs ``eval_every = 1``). Scene statistics of a log-mel spectrogram
(``scene_statistics``): the *noise spectrum* (the mean log-mel of the quietest 20% of
frames) and the *decay rate* (the mean fall of the log energy over ``DECAY_FRAMES``
frames, over the steepest 10% of such falls: fast after offsets in a dry room, slow in a
reverberant one). The distance between two clips (``scene_distance``) is the mean absolute
difference of their noise spectra (nats) plus the absolute log ratio of their decay rates.
Distances to the target (the in-scene clip):

- ``transfer_distance`` (the objective, lower is better): the output;
- ``input_distance``: the unprocessed (clean) input -- (a) of the paper's comparison;
- ``wrong_distance``: the output conditioned on a clip of another scene -- (b);
- ``no_frame_distance``: the output with a blank (zero) frame -- (c) for an audio-visual
  model (in "audio" mode the frame is unused: the same as ``transfer_distance``; in
  "visual" mode nothing of the scene is left);
- ``unconditional_distance``: the null condition; ``recon_distance``: the autoencoder's
  reconstruction of the target (the floor the latent space allows);
- ``*_noise`` and ``*_decay``: the two parts of each; ``transfer_vs_input`` and
  ``transfer_vs_wrong``: the output's distance over (a)'s and (b)'s (below 1: better);
- ``mel_l1`` / ``input_mel_l1``: mean absolute log-mel difference to the target;
  ``denoise_loss`` (also ``loss``): noise-prediction MSE with fixed noise and timesteps.

The last report adds artifacts in the trial's folder (``latent_diffusion.trial_dir``):
``spectrograms.png`` (rows: input, target, output, wrong-scene output; a column per clip)
and WAV files (16-bit) of the input, target and output of ``artifact_clips`` test clips.
"""

from __future__ import annotations

import json
import math
import os
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autoplat.core.interfaces import (
    DROPOUT,
    EPOCHS,
    LAYERS,
    NON_NEGATIVE,
    PATCH,
    POSITIVE,
    SIZE,
    Architecture,
    DataSpec,
    OnnxPart,
    Range,
    Splits,
    floats,
    ints,
    one_of,
)
from autoplat.core.training import (
    EVAL_BATCH_SIZE,
    TRAINER_PARAMS,
    TrialFailed,
    autocast,
    start_training,
    train_epoch,
)
from autoplat.plugins.architectures.latent_diffusion import (
    BETA_SCHEDULES,
    DENOISERS,
    EMA,
    EVAL_SEED,
    DiT,
    KLAutoencoder,
    LatentDiffusionModel,
    _optimizer,
    save_grid,
    train_autoencoder,
    trial_dir,
)
from autoplat.plugins.audio.frontend import LogMel, mel_filterbank

MODES = ("audio-visual", "audio", "visual", "none")
DECAY_FRAMES = 8  # the span over which the decay rate measures falls of the log energy
MEL_FLOOR = 1e-5
TASK, MODALITY = "scene-transfer", "audio-image"


# -- scene statistics ------------------------------------------------------------------------
def scene_statistics(logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise spectrum (N, mels), decay rate (N,)) of log-mel spectrograms (N, mels, frames);
    see the module docstring."""
    logmel = logmel.float()
    energy = torch.logsumexp(logmel, dim=1)  # (N, frames): log total power per frame
    quiet = max(1, energy.shape[1] // 5)
    idx = energy.topk(quiet, dim=1, largest=False).indices
    noise = logmel.gather(2, idx[:, None, :].expand(-1, logmel.shape[1], -1)).mean(2)
    falls = (energy[:, :-DECAY_FRAMES] - energy[:, DECAY_FRAMES:]) / DECAY_FRAMES
    steep = max(1, falls.shape[1] // 10)
    decay = falls.topk(steep, dim=1).values.mean(1).clamp(min=1e-3)
    return noise, decay


def scene_distance(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip: (noise-spectrum distance, decay distance) of log-mels ``a`` and ``b``."""
    noise_a, decay_a = scene_statistics(a)
    noise_b, decay_b = scene_statistics(b)
    return (noise_a - noise_b).abs().mean(1), (decay_a.log() - decay_b.log()).abs()


# -- the waveform inverse --------------------------------------------------------------------
def mel_to_magnitude(power_mel: torch.Tensor, filters: torch.Tensor, iters: int = 100):
    """Linear STFT magnitudes (N, bins, frames) whose mel power is closest to ``power_mel``
    (N, mels, frames), by non-negative least squares (multiplicative updates)."""
    gram = filters.T @ filters
    target = filters.T @ power_mel
    power = target.clamp(min=1e-10)
    for _ in range(iters):
        power = power * target.clamp(min=0) / (gram @ power).clamp(min=1e-10)
    return power.sqrt()


def griffin_lim(
    magnitude: torch.Tensor,
    n_fft: int,
    hop_length: int,
    length: int,
    iters: int = 32,
    momentum: float = 0.99,
    seed: int = 0,
) -> torch.Tensor:
    """Waveforms (N, length) whose STFT magnitudes (centred, Hann) approach ``magnitude``
    (N, n_fft // 2 + 1, frames): fast Griffin-Lim (Perraudin et al. 2013), as librosa's."""
    window = torch.hann_window(n_fft, device=magnitude.device)
    stft = {"n_fft": n_fft, "hop_length": hop_length, "window": window}
    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(magnitude.shape, generator=generator).to(magnitude.device) * 2 * math.pi
    angles = torch.polar(torch.ones_like(magnitude), phase)
    previous = torch.zeros_like(angles)
    for _ in range(iters):
        waves = torch.istft(magnitude * angles, length=length, **stft)
        rebuilt = torch.stft(waves, return_complex=True, **stft)[..., : magnitude.shape[-1]]
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / (angles.abs() + 1e-8)
        previous = rebuilt
    return torch.istft(magnitude * angles, length=length, **stft)


def write_wav(waveform: torch.Tensor, sample_rate: int, path: Path) -> Path:
    """A mono 16-bit WAV (peak-normalized when louder than full scale); temp name + rename."""
    x = waveform.detach().float().cpu().numpy()
    x = x / max(1.0, float(np.abs(x).max()))
    pcm = (x * 32767).round().astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes(pcm.tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- networks --------------------------------------------------------------------------------
class ConditionEncoder(nn.Module):
    """(condition log-mel (B, 1, mels, frames), frame (B, 3, S, S)) -> (B, dim); the mode
    says which of the two it sees (see ``MODES``)."""

    def __init__(self, mode: str, n_mels: int, width: int, dim: int) -> None:
        super().__init__()
        self.mode = mode
        if mode in ("audio-visual", "audio"):
            self.audio = nn.Sequential(
                nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),
            )  # fmt: skip
            bands = (n_mels + 3) // 4
            self.audio_proj = nn.Linear(2 * width * bands, dim)
        if mode in ("audio-visual", "visual"):
            self.visual = nn.Sequential(
                nn.Conv2d(3, width, 3, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),
            )  # fmt: skip
            self.visual_proj = nn.Linear(2 * width, dim)
        if mode != "none":  # "none": no encoder, the null condition always
            self.mix = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, mel: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        h = torch.zeros((), device=mel.device)
        if hasattr(self, "audio"):
            a = self.audio(mel * 2 - 1)  # (B, W, bands, T'): statistics over time per band
            h = h + self.audio_proj(torch.cat([a.mean(3), a.std(3)], 1).flatten(1))
        if hasattr(self, "visual"):
            v = self.visual(frame * 2 - 1).flatten(2)
            h = h + self.visual_proj(torch.cat([v.mean(2), v.std(2)], 1))
        return self.mix(h)


class ConditionalUNet(nn.Module):
    """diffusers' ``UNet2DModel`` on (noisy target, input) latents; a condition vector of
    ``dim = 4 * width`` joins the time embedding and scales and shifts every block (FiLM)."""

    def __init__(
        self, latent_shape: tuple[int, int, int], width: int, levels: int, layers_per_block: int
    ) -> None:
        from diffusers import UNet2DModel

        super().__init__()
        self.dim = 4 * width
        self.unet = UNet2DModel(
            sample_size=latent_shape[1:],
            in_channels=2 * latent_shape[0],
            out_channels=latent_shape[0],
            block_out_channels=tuple(width * 2 ** min(i, 1) for i in range(levels)),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=math.gcd(8, width),
            add_attention=False,
            resnet_time_scale_shift="scale_shift",
            class_embed_type="identity",
        )

    def forward(self, z: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.unet(z, t, class_labels=c).sample


class ConditionalDiT(DiT):
    """The DiT of latent_diffusion.py on (noisy target, input) latents, with a condition
    vector (``dim = width``) in place of the class embedding (adaLN-Zero)."""

    def __init__(
        self, latent_shape: tuple[int, int, int], width: int, depth: int, heads: int, patch: int
    ) -> None:
        super().__init__(latent_shape, 1, width, depth, heads, patch)
        self.dim = width
        self.patch_embed = nn.Conv2d(2 * latent_shape[0], width, patch, stride=patch)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(width, -1))
        nn.init.zeros_(self.patch_embed.bias)
        self.label_embed = nn.Identity()  # type: ignore[assignment]


class SceneDenoiser(nn.Module):
    """The denoising network, the condition encoder and the null condition, trained (and
    averaged by ``EMA``) together."""

    def __init__(self, net: nn.Module, encoder: ConditionEncoder) -> None:
        super().__init__()
        self.net, self.encoder = net, encoder
        self.null = nn.Parameter(torch.zeros(net.dim))

    def condition(self, mel: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """The condition vectors of condition clips (the null one in mode "none")."""
        if self.encoder.mode == "none":
            return self.null.expand(len(mel), -1)
        return self.encoder(mel, frame)

    def forward(
        self, z: torch.Tensor, z_input: torch.Tensor, t: torch.Tensor, c: torch.Tensor
    ) -> torch.Tensor:
        t = t.expand(len(z)) if t.dim() == 1 else t.reshape(1).expand(len(z))
        return self.net(torch.cat([z, z_input], 1), t, c)


class SceneTransferModel(LatentDiffusionModel):
    """The log-mel front end, the autoencoder and the ``SceneDenoiser``.

    ``forward(clean, cond_audio, cond_frame, timesteps=None, noise=None)`` is one denoising
    step (the clean latent as the target, ``noise`` default none, half way by default)
    returning the denoised log-mel; it exercises every part. Training uses the parts.
    """

    def __init__(
        self,
        autoencoder: KLAutoencoder,
        denoiser: SceneDenoiser,
        latent_shape: tuple[int, int, int],
        noise_config: dict[str, Any],
        frontend: dict[str, int],
        frames: int,
    ) -> None:
        super().__init__(autoencoder, denoiser, 0, latent_shape, noise_config)
        self.frontend = dict(frontend)
        self.logmel = LogMel(floor=MEL_FLOOR, **frontend)
        self.frames = frames
        self.register_buffer("mel_low", torch.tensor(math.log(MEL_FLOOR)))
        self.register_buffer("mel_high", torch.tensor(2.0))

    def spectrogram(self, waves: torch.Tensor) -> torch.Tensor:
        """Scaled log-mel spectrograms (B, 1, mels, frames) of waveforms (B, samples)."""
        mel = self.logmel(waves)[..., : self.frames]
        return ((mel - self.mel_low) / (self.mel_high - self.mel_low))[:, None]

    def unscale(self, spec: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, mels, frames) of scaled spectrograms (B, 1, mels, frames)."""
        return spec[:, 0] * (self.mel_high - self.mel_low) + self.mel_low

    def set_range(self, waves: torch.Tensor) -> None:
        """Set the scaling from the 0.1 and 99.9 percentiles of the waveforms' log-mels."""
        mel = torch.cat([self.logmel(w)[..., : self.frames] for w in waves.split(256)])
        low, high = torch.quantile(mel.flatten()[:1_000_000], torch.tensor([0.001, 0.999]))
        self.mel_low.fill_(float(low))
        self.mel_high.fill_(max(float(high), float(low) + 1.0))

    def forward(  # type: ignore[override]
        self,
        clean: torch.Tensor,
        cond_audio: torch.Tensor,
        cond_frame: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b = clean.shape[0]
        z_input = self.to_latents(self.spectrogram(clean))
        c = self.denoiser.condition(self.spectrogram(cond_audio), cond_frame)
        if timesteps is None:
            timesteps = torch.full((b,), len(self.alphas_cumprod) // 2, device=clean.device)
        alpha = self.alphas_cumprod[timesteps].reshape(b, 1, 1, 1)
        noisy = alpha.sqrt() * z_input + (1 - alpha).sqrt() * (0 if noise is None else noise)
        eps = self.denoiser(noisy, z_input, timesteps, c)
        return self.unscale(self.from_latents((noisy - (1 - alpha).sqrt() * eps) / alpha.sqrt()))


# -- sampling and evaluation -----------------------------------------------------------------
@torch.inference_mode()
def transfer(
    model: SceneTransferModel,
    z_input: torch.Tensor,
    c: torch.Tensor,
    steps: int,
    guidance_scale: float,
    seed: int,
) -> torch.Tensor:
    """Scaled spectrograms sampled by DDIM with guidance for input latents and conditions."""
    from diffusers import DDIMScheduler

    model.eval()
    device = z_input.device
    scheduler = DDIMScheduler.from_config(model.ddpm().config)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(z_input.shape, generator=generator).to(device)
    guided = guidance_scale != 1.0  # at 1 the null prediction cancels out
    null = model.denoiser.null.expand(len(z), -1)
    z_in, c_in = (torch.cat([z_input, z_input]), torch.cat([c, null])) if guided else (z_input, c)
    for t in scheduler.timesteps:
        with autocast(device):
            eps = model.denoiser(torch.cat([z, z]) if guided else z, z_in, t.to(device), c_in)
        if guided:
            eps_cond, eps_null = eps.float().chunk(2)
            eps = eps_null + guidance_scale * (eps_cond - eps_null)
        z = scheduler.step(eps.float(), t, z).prev_sample
    with autocast(device):
        return model.from_latents(z).float()


def wrong_partners(scenes: torch.Tensor) -> torch.Tensor:
    """For each clip, the next clip (cyclically) of another scene (itself if there is none)."""
    n = len(scenes)
    out = torch.arange(n)
    for i in range(n):
        for step in range(1, n):
            if scenes[(i + step) % n] != scenes[i]:
                out[i] = (i + step) % n
                break
    return out


@torch.inference_mode()
def denoise_loss(model: SceneTransferModel, data: dict[str, torch.Tensor]) -> float:
    """Noise-prediction MSE with fixed noise and timesteps (``EVAL_SEED``)."""
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    z_t, z_in, c = data["z_target"], data["z_input"], data["condition"]
    t = torch.randint(0, len(model.alphas_cumprod), (len(z_t),), generator=generator)
    noise = torch.randn(z_t.shape, generator=generator).to(z_t.device)
    t = t.to(z_t.device)
    with autocast(z_t.device):
        eps = model.denoiser(model.ddpm().add_noise(z_t, noise, t), z_in, t, c).float()
    return F.mse_loss(eps, noise).item()


@torch.inference_mode()
def prepare(model: SceneTransferModel, split: tuple[torch.Tensor, ...], n: int, device):
    """The first ``n`` clips of a split as scaled spectrograms, latents and conditions."""
    model.eval()
    clean, target, cond_audio, frames, scenes = (t[:n].to(device) for t in split[:5])
    out: dict[str, torch.Tensor] = {"scenes": scenes.cpu(), "clean": clean, "target": target}
    with autocast(device):
        out["input"] = model.spectrogram(clean)
        out["target_spec"] = model.spectrogram(target)
        out["cond"] = model.spectrogram(cond_audio)
        out["z_input"] = model.to_latents(out["input"]).float()
        out["z_target"] = model.to_latents(out["target_spec"]).float()
        out["condition"] = model.denoiser.condition(out["cond"], frames).float()
        wrong = wrong_partners(out["scenes"]).to(device)
        out["wrong"] = model.denoiser.condition(out["cond"][wrong], frames[wrong]).float()
        out["no_frame"] = model.denoiser.condition(out["cond"], torch.zeros_like(frames)).float()
    out["null"] = model.denoiser.null.detach().expand(len(clean), -1)
    return out


def evaluate_transfer(
    model: SceneTransferModel, data: dict[str, torch.Tensor], hp: dict[str, Any]
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The split's metrics (module docstring, no prefix) and the log-mels they measured."""
    names = {
        "output": "condition",
        "wrong": "wrong",
        "no_frame": "no_frame",
        "unconditional": "null",
    }
    mode = model.denoiser.encoder.mode
    if mode == "audio":  # the frame is unused: no need to sample again
        names["no_frame"] = "condition"
    if mode == "none":
        names = dict.fromkeys(names, "null")
    variants = list(dict.fromkeys(names.values()))
    n = len(data["z_input"])
    z_in = data["z_input"].repeat(len(variants), 1, 1, 1)
    c = torch.cat([data[v] for v in variants])
    samples = transfer(
        model, z_in, c, int(hp["sample_steps"]), float(hp["guidance_scale"]), EVAL_SEED
    )
    with torch.inference_mode():
        parts = model.unscale(samples.clamp(-0.25, 1.25)).cpu().split(n)
        sampled = dict(zip(variants, parts, strict=True))
        recon = model.unscale(model.from_latents(data["z_target"]).clamp(-0.25, 1.25)).cpu()
    mels = {name: sampled[variant] for name, variant in names.items()}
    mels |= {"recon": recon, "input": model.unscale(data["input"]).float().cpu()}
    target = model.unscale(data["target_spec"]).float().cpu()
    metrics: dict[str, float] = {}
    for name, mel in mels.items():
        key = "transfer" if name == "output" else name
        noise, decay = scene_distance(mel, target)
        metrics[f"{key}_distance"] = float((noise + decay).mean())
        metrics[f"{key}_noise"], metrics[f"{key}_decay"] = float(noise.mean()), float(decay.mean())
    metrics["transfer_vs_input"] = metrics["transfer_distance"] / metrics["input_distance"]
    metrics["transfer_vs_wrong"] = metrics["transfer_distance"] / metrics["wrong_distance"]
    metrics["mel_l1"] = float((mels["output"] - target).abs().mean())
    metrics["input_mel_l1"] = float((mels["input"] - target).abs().mean())
    metrics["denoise_loss"] = metrics["loss"] = denoise_loss(model, data)
    return metrics, mels | {"target": target}


def waveforms(model: SceneTransferModel, logmel: torch.Tensor, length: int) -> torch.Tensor:
    """Griffin-Lim waveforms (N, length) of log-mel spectrograms (N, mels, frames)."""
    f = model.frontend
    filters = torch.from_numpy(mel_filterbank(f["sample_rate"], f["n_fft"], f["n_mels"])).double()
    power = (logmel.double().exp() - MEL_FLOOR).clamp(min=0)
    magnitude = mel_to_magnitude(power, filters).float()
    return griffin_lim(magnitude, f["n_fft"], f["hop_length"], length)


def save_artifacts(
    model: SceneTransferModel, mels: dict[str, torch.Tensor], data: dict, clips: int, folder: Path
) -> dict[str, str]:
    """The spectrogram grid and WAVs of the first ``clips`` clips; artifact_* -> path."""
    rows = ("input", "target", "output", "wrong")
    k = min(clips, len(mels["input"]))
    low, high = float(model.mel_low), float(model.mel_high)
    images = torch.cat([mels[r][:k, None].flip(2) for r in rows])
    images = ((images - low) / (high - low)).clamp(0, 1)
    labels = torch.arange(len(rows)).repeat_interleave(k)
    grid = save_grid(images, labels, len(rows), folder / "spectrograms.png", cell=128)
    artifacts = {"artifact_spectrograms": str(grid)}
    rate = model.frontend["sample_rate"]
    length = model.frames * model.frontend["hop_length"]
    out = waveforms(model, mels["output"][:k], length)
    for i in range(k):
        sounds = {
            "input": data["clean"][i, :length],
            "target": data["target"][i, :length],
            "output": out[i],
        }
        for what, wave_i in sounds.items():
            path = write_wav(wave_i, rate, folder / f"clip{i}_{what}.wav")
            artifacts[f"artifact_clip{i}_{what}"] = str(path)
    return artifacts


# -- training --------------------------------------------------------------------------------
def train_scene_transfer(
    model: SceneTransferModel,
    splits: Splits,
    params: dict[str, Any],
    report: Callable[[int, dict[str, Any]], None],
    seed: int,
    *,
    artifact_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train the autoencoder, then the conditional denoiser, reporting after every epoch.

    Args:
        model: A ``SceneTransferModel``.
        splits: ``av-scenes`` / ``av-folder`` splits (see the module docstring).
        params: The keys of ``TRAINER_PARAMS`` and ``SceneTransfer.trainer_params``.
        report: ``report(epoch, metrics)``: train_loss, train_ae_loss and the val metrics;
            the last adds the test metrics and the artifacts' paths (``artifact_*``).
        seed: Seeds torch, the batch order and the condition dropout.
        artifact_dir: Where the artifacts go (default: the Ray trial's folder).

    Returns:
        The metrics of the last report.

    Raises:
        TrialFailed: A loss became NaN or infinite, or a trainer param is out of range.
    """
    hp = {**TRAINER_PARAMS, **SceneTransfer.trainer_params}
    hp |= {k: v for k, v in params.items() if k in hp}
    if (reason := SceneTransfer().range_problem(hp)) is not None:
        raise TrialFailed(reason)
    epochs, batch_size, generator, device = start_training(model, hp, seed)
    clean, target, cond_audio, frames = (t.to(device) for t in splits.train[:4])
    model.set_range(torch.cat([clean, target]))
    with torch.no_grad():
        x = torch.cat([model.spectrogram(w) for w in clean.split(256)])
        y = torch.cat([model.spectrogram(w) for w in target.split(256)])
        cond = torch.cat([model.spectrogram(w) for w in cond_audio.split(256)])
    ae_loss = train_autoencoder(model, torch.cat([x, y]), hp, generator, device)  # type: ignore[arg-type]
    with torch.no_grad(), autocast(device):
        z_input = torch.cat([model.to_latents(s) for s in x.split(EVAL_BATCH_SIZE)]).float()
        posterior = [model.autoencoder.encode(s) for s in y.split(EVAL_BATCH_SIZE)]
    mean = torch.cat([m for m, _ in posterior]).float() * model.scale_factor
    std = torch.cat([(0.5 * v).exp() for _, v in posterior]).float() * model.scale_factor

    denoiser, ddpm, n_train = model.denoiser, model.ddpm(), len(x)
    steps = epochs * math.ceil(n_train / batch_size)
    warmup = min(int(hp["warmup_epochs"]) * math.ceil(n_train / batch_size), steps)
    optimizer, scheduler = _optimizer(
        denoiser.parameters(), float(hp["lr"]), float(hp["weight_decay"]), steps, warmup
    )
    ema = EMA(denoiser, float(hp["ema_decay"]))
    optimizer.register_step_post_hook(lambda *_: ema.update(denoiser))
    cfg_dropout, timesteps = float(hp["cfg_dropout"]), ddpm.config.num_train_timesteps

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        n = len(idx)
        z = mean[idx] + std[idx] * torch.randn_like(mean[idx])
        c = denoiser.condition(cond[idx], frames[idx])
        drop = (torch.rand(n, generator=generator) < cfg_dropout).to(device)
        c = torch.where(drop[:, None], denoiser.null.expand(n, -1), c)
        t = torch.randint(0, timesteps, (n,), generator=generator).to(device)
        noise = torch.randn_like(z)
        return F.mse_loss(denoiser(ddpm.add_noise(z, noise, t), z_input[idx], t, c).float(), noise)

    n_eval, every = int(hp["eval_clips"]), int(hp["eval_every"])
    metrics: dict[str, Any] = {}
    for epoch in range(1, epochs + 1):
        loss = train_epoch(
            denoiser, optimizer, scheduler, n_train, batch_size, generator, batch_loss, epoch,
            "the denoising loss",
        )  # fmt: skip
        metrics = {"train_loss": loss, "train_ae_loss": ae_loss}
        if epoch == epochs:  # the average stays: the test metrics and the checkpoint use it
            denoiser.load_state_dict(ema.state)
        with ema.applied(denoiser):
            val_data = prepare(model, splits.val, n_eval, device)
            if epoch == epochs or (every and epoch % every == 0):
                val, _ = evaluate_transfer(model, val_data, hp)
            else:
                val = {"denoise_loss": denoise_loss(model, val_data)}
                val["loss"] = val["denoise_loss"]
        metrics |= {f"val_{k}": v for k, v in val.items()}
        if epoch == epochs:
            data = prepare(model, splits.test, n_eval, device)
            test, mels = evaluate_transfer(model, data, hp)
            metrics |= {f"test_{k}": v for k, v in test.items()}
            folder = Path(artifact_dir) if artifact_dir is not None else trial_dir()
            metrics |= save_artifacts(model, mels, data, int(hp["artifact_clips"]), folder)
        report(epoch, metrics)
    return metrics


# -- the architecture ------------------------------------------------------------------------
class SceneTransfer(Architecture):
    """Audio-visual scene transfer by conditional latent diffusion; see the module docstring."""

    name: ClassVar[str] = "scene-transfer"
    task: ClassVar[str] = TASK
    modalities: ClassVar[tuple[str, ...]] = (MODALITY,)
    default_space: ClassVar[str] = "scene-transfer"
    defaults: ClassVar[dict[str, Any]] = {
        "condition": "audio-visual",  # or "audio", "visual", "none"
        "n_mels": 32,
        "n_fft": 256,
        "hop_length": 64,
        "latent_channels": 4,
        "ae_width": 16,
        "downsample": 1,
        "cond_width": 32,
        "denoiser": "unet",  # or "dit"
        "unet_width": 32,
        "unet_levels": 2,
        "layers_per_block": 1,
        "dit_width": 64,
        "dit_depth": 2,
        "dit_heads": 4,
        "dit_patch": 2,
        "timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
    }
    trainer_params: ClassVar[dict[str, Any]] = {
        "ae_epochs": 10,
        "ae_lr": 2e-3,
        "kl_weight": 1e-6,
        "cfg_dropout": 0.1,
        "ema_decay": 0.99,
        "sample_steps": 20,
        "guidance_scale": 1.5,
        "eval_clips": 32,
        "eval_every": 0,  # transfer metrics every n epochs (0: the last only) and the last
        "artifact_clips": 2,
    }
    metrics: ClassVar[dict[str, str]] = {
        "val_transfer_distance": "minimize",
        "val_transfer_vs_input": "minimize",
        "val_transfer_vs_wrong": "minimize",
        "val_mel_l1": "minimize",
        "val_denoise_loss": "minimize",
    }
    param_ranges: ClassVar[dict[str, Range]] = {
        "n_mels": ints(4, 512),
        "n_fft": ints(16, 65_536),
        "hop_length": ints(1, 65_536),
        "latent_channels": SIZE,
        "ae_width": SIZE,
        "downsample": ints(0, 4),
        "cond_width": SIZE,
        "unet_width": SIZE,
        "unet_levels": ints(1, 6),
        "layers_per_block": LAYERS,
        "dit_width": SIZE,
        "dit_depth": LAYERS,
        "dit_heads": LAYERS,
        "dit_patch": PATCH,
        "timesteps": ints(2, 100_000),
        "ae_epochs": EPOCHS,
        "ae_lr": POSITIVE,
        "kl_weight": NON_NEGATIVE,
        "cfg_dropout": DROPOUT,
        "ema_decay": floats(0, 1, open_high=True),
        "sample_steps": ints(1, 10_000),
        "guidance_scale": NON_NEGATIVE,
        "eval_clips": ints(2, 100_000),
        "eval_every": ints(0, 100_000),
        "artifact_clips": ints(0, 64),
        "condition": one_of(*MODES),
        "denoiser": one_of(*DENOISERS),
        "beta_schedule": one_of(*BETA_SCHEDULES),
    }

    @staticmethod
    def grid(p: dict[str, Any]) -> int:
        """What the spectrogram's height and width must be multiples of."""
        factor = 2 ** int(p["downsample"])
        if p["denoiser"] == "unet":
            return factor * 2 ** (int(p["unet_levels"]) - 1)
        return factor * int(p["dit_patch"])

    @staticmethod
    def frames(p: dict[str, Any], samples: int) -> int:
        """The spectrogram frames kept: the log-mel's, cropped to a multiple of ``grid``."""
        grid = SceneTransfer.grid(p)
        return (1 + samples // int(p["hop_length"])) // grid * grid

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build the model (for ``spec``'s clips), or None."""
        if (reason := self.unknown_params(params)) is not None:
            return reason
        p = {**self.defaults, **self.trainer_params, **params}
        if (reason := self.range_problem(p)) is not None:
            return reason
        if p["denoiser"] == "dit" and (p["dit_width"] % p["dit_heads"] or p["dit_width"] % 4):
            return (
                f"scene-transfer: dit_width {p['dit_width']} must be divisible by dit_heads "
                f"{p['dit_heads']} and by 4 (the 2-D sin-cos positions)"
            )
        if p["n_mels"] % self.grid(p):
            return (
                f"scene-transfer: n_mels {p['n_mels']} must be a multiple of {self.grid(p)} "
                "(2**downsample times the UNet's 2**(unet_levels - 1), or dit_patch); change "
                "n_mels or lower downsample / unet_levels"
            )
        if spec is None:
            return None
        if spec.task != TASK or spec.modality != MODALITY or len(spec.input_shape) != 4:
            return (
                "scene-transfer: needs scene-transfer clips (av-scenes, av-folder), got a "
                f"{spec.task} {spec.modality} dataset"
            )
        samples = spec.input_shape[0]
        if p["n_fft"] > samples or self.frames(p, samples) < self.grid(p):
            return (
                f"scene-transfer: clips of {samples} samples are too short for n_fft "
                f"{p['n_fft']}, hop_length {p['hop_length']} and a latent grid of "
                f"{self.grid(p)} frames; use longer clips or a smaller hop_length"
            )
        if spec.sample_rate <= 0:
            return "scene-transfer: the dataset does not say its sample_rate"
        return None

    def build(self, params: dict[str, Any], spec: DataSpec) -> SceneTransferModel:
        """Build the model; params missing from ``params`` take ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        p = self.resolve_params(params, spec)
        factor = 2 ** int(p["downsample"])
        frames = self.frames(p, spec.input_shape[0])
        n_mels, channels = int(p["n_mels"]), int(p["latent_channels"])
        latent_shape = (channels, n_mels // factor, frames // factor)
        autoencoder = KLAutoencoder(1, int(p["ae_width"]), int(p["downsample"]), channels)
        net: nn.Module
        if p["denoiser"] == "unet":
            net = ConditionalUNet(
                latent_shape,
                int(p["unet_width"]),
                int(p["unet_levels"]),
                int(p["layers_per_block"]),
            )
        else:
            net = ConditionalDiT(
                latent_shape, int(p["dit_width"]), int(p["dit_depth"]), int(p["dit_heads"]),
                int(p["dit_patch"]),
            )  # fmt: skip
        encoder = ConditionEncoder(str(p["condition"]), n_mels, int(p["cond_width"]), net.dim)
        noise_config = {
            "num_train_timesteps": int(p["timesteps"]),
            "beta_schedule": str(p["beta_schedule"]),
            "clip_sample": False,
        }
        frontend = {
            "sample_rate": spec.sample_rate,
            "n_fft": int(p["n_fft"]),
            "hop_length": int(p["hop_length"]),
            "n_mels": n_mels,
        }
        return SceneTransferModel(
            autoencoder, SceneDenoiser(net, encoder), latent_shape, noise_config, frontend, frames
        )

    def train(
        self,
        model: torch.nn.Module,
        splits: Splits,
        params: dict[str, Any],
        report: Callable[[int, dict[str, float]], None],
        seed: int,
    ) -> dict[str, float]:
        """Train with ``train_scene_transfer``."""
        return train_scene_transfer(model, splits, params, report, seed)  # type: ignore[arg-type]

    def onnx_parts(self, model: torch.nn.Module, splits: Splits) -> dict[str, OnnxPart]:
        """The condition encoder (the condition's waveform and/or frame, as ``condition``
        sees, -> vector; none in mode "none"), the denoiser (noisy latent, input latent,
        timestep, condition -> noise), the encoder (waveform -> scaled latent) and the
        decoder (scaled latent -> log-mel); the null condition is in the metadata. The
        DDIM loop, guidance and Griffin-Lim stay in Python."""
        assert isinstance(model, SceneTransferModel)
        clean, _, cond_audio, frames = (t[:4] for t in splits.test[:4])
        with torch.no_grad():
            z = model.to_latents(model.spectrogram(clean))
            c = model.denoiser.condition(model.spectrogram(cond_audio), frames)
        t = torch.randint(0, len(model.alphas_cumprod), (len(z),))
        facts = {
            "scale_factor": str(float(model.scale_factor)),
            "num_train_timesteps": str(len(model.alphas_cumprod)),
            "sample_rate": str(model.frontend["sample_rate"]),
        }
        mode = model.denoiser.encoder.mode
        seen = {"audio-visual": (0, 1), "audio": (0,), "visual": (1,), "none": ()}[mode]
        condition = tuple((cond_audio, frames)[i] for i in seen)
        facts["condition"] = mode
        facts["null_condition"] = json.dumps(model.denoiser.null.tolist())
        parts = {
            "condition": (_Condition(model), condition, tuple(("audio", "frame")[i] for i in seen)),
            "denoiser": (
                model.denoiser,
                (z, z, t, c),
                ("latent", "input", "timestep", "condition"),
            ),
            "encoder": (_Encoder(model), (clean,), ("audio",)),
            "decoder": (_Decoder(model), (z,), ("latent",)),
        }
        outputs = {"condition": "condition", "denoiser": "noise", "encoder": "latent"}
        return {
            name: OnnxPart(
                module, inputs, names, MODALITY, outputs.get(name, "logmel"), metadata=facts
            )
            for name, (module, inputs, names) in parts.items()
            if inputs  # mode "none" has no condition encoder: the null vector is in metadata
        }


class _Condition(nn.Module):
    """The condition clip's waveform and/or frame (as its mode sees) -> condition vector."""

    def __init__(self, model: SceneTransferModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        mode = self.model.denoiser.encoder.mode
        mel = self.model.spectrogram(inputs[0]) if mode != "visual" else inputs[0]
        return self.model.denoiser.condition(mel, inputs[-1])  # the unseen one is not read


class _Encoder(_Condition):
    def forward(self, audio: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model.to_latents(self.model.spectrogram(audio))


class _Decoder(_Condition):
    def forward(self, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model.unscale(self.model.from_latents(z))
