"""Latent diffusion: a KL autoencoder, then a class-conditional denoiser in its latent space.

Training (``train_latent_diffusion``) has two stages in one trial:

1. A KL-regularized autoencoder (``KLAutoencoder``: conv encoder to a diagonal Gaussian
   posterior, conv decoder; ``downsample`` stride-2 stages, ``latent_channels`` channels)
   trains for ``ae_epochs`` on ``MSE(x, decode(z)) + kl_weight * KL`` and is then frozen.
   Latents are scaled by ``1 / std`` of the training latents (``scale_factor``, as Stable
   Diffusion does) so the denoiser sees unit-variance inputs.
2. A denoiser on those latents -- diffusers' ``UNet2DModel`` (``denoiser = "unet"``,
   class embeddings via ``num_class_embeds``) or a small DiT (``denoiser = "dit"``: the
   paper's recipe, see ``DiT``) -- trains for ``epochs`` to predict the noise that
   diffusers' ``DDPMScheduler`` added (``timesteps``, ``beta_schedule``), with AdamW, a
   linear warmup over ``warmup_epochs`` and cosine decay. Labels are replaced by a null
   class with probability ``cfg_dropout`` so one network serves both the conditional and
   the unconditional prediction of classifier-free guidance. An exponential moving
   average of the denoiser's weights (``ema_decay``, ``EMA``) is what samples and is
   evaluated; after the last epoch the denoiser keeps the average (the checkpoint).

Sampling uses diffusers' ``DDIMScheduler`` (``sample_steps``, eta 0) with guidance
``eps = eps_null + guidance_scale * (eps_class - eps_null)`` and decodes the latents.

Data: any image dataset with class labels (digits, mnist5k, image-folder): the splits are
``(images, labels)`` as for classification. Audio, as the scene-transfer setting of the
audio-visual speech paper (condition on a clip's features, generate its spectrogram), is
an option through ``image-folder``: save each clip's log-mel spectrogram as a grey PNG in
a folder named after its condition (e.g. the scene or speaker), and the same model
learns to generate spectrograms per condition; examples/latent_diffusion_spectrograms.toml
shows the config. Conditioning on continuous clip features (rather than a class) is
scene_transfer.py's (audio-visual scene transfer, built on these pieces).

Metrics (``val_*`` every epoch, ``test_*`` on the last):

- ``denoise_loss``: the noise-prediction MSE on the split, with fixed noise and timesteps
  (the same for every epoch and trial); also reported as ``loss``.
- ``recon_loss``: the frozen autoencoder's pixel MSE on the split.
- ``sample_accuracy``: ``eval_samples`` class-conditional samples (classes in turn) are
  classified by a fixed classifier; the share classified as their conditioning class
  (chance: 1 / classes). Also reported as ``accuracy``.
- ``fid``: the Frechet distance between that classifier's penultimate features (its
  pooled conv features) of the samples and of the split's real images.

The fixed classifier (``fixed_classifier``) is a small CNN trained with seed 0 and fixed
hyperparameters on the dataset's train split, and cached in ``classifier-<hash>.pt``
where the hash covers the train images, labels and the classifier recipe. The first
trial to finish training it publishes the file (an atomic link); every other trial of the
study loads that same file, so their sample scores are comparable. The cache folder is
``$AUTOPLAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/autoplat``, else ``~/.cache/autoplat``;
on a multi-node Ray cluster point ``AUTOPLAT_CACHE_DIR`` at shared storage.

The last report carries ``artifact_samples``: the path of a PNG grid of class-conditional
samples (a row per class), written to the Ray trial's folder (a temporary folder outside
Ray, or ``artifact_dir``); the driver copies it to ``artifacts/<study>/trial-<n>/`` beside
the store before Ray's per-run folder is removed, and records that path.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autoplat.core.interfaces import (
    ALLOCATION,
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
    _lr_lambda,
    autocast,
    load_checkpoint,
    save_tensors,
    start_training,
    sync_folder,
    train_epoch,
)
from autoplat.plugins.layers import Attention, ConvTower, sincos_positions

DENOISERS = ("unet", "dit")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
CLASSIFIER_RECIPE = {"width": 32, "depth": 3, "epochs": 10, "lr": 3e-3, "batch_size": 64}
"""How the fixed classifier trains (seed 0); part of its cache key."""
EVAL_SEED = 1234  # fixed noise for val/test metrics: the same in every epoch and trial


# -- the autoencoder ----------------------------------------------------------------------
def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice, with a residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class KLAutoencoder(nn.Module):
    """Images in [0, 1] <-> latents (``latent_channels``, H / 2**downsample, W / 2**downsample).

    ``encode`` gives the posterior's mean and log-variance; ``decode`` maps latents back
    to images (unclamped, on the scale of the inputs).
    """

    def __init__(self, channels: int, width: int, downsample: int, latent_channels: int):
        super().__init__()
        widths = [width * 2**i for i in range(downsample + 1)]
        enc: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1)]
        for i in range(downsample):
            enc += [ResBlock(widths[i]), nn.Conv2d(widths[i], widths[i + 1], 3, 2, padding=1)]
        enc += [ResBlock(widths[-1]), _norm(widths[-1]), nn.SiLU()]
        enc.append(nn.Conv2d(widths[-1], 2 * latent_channels, 3, padding=1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1)]
        for i in reversed(range(downsample)):
            dec += [ResBlock(widths[i + 1]), nn.Upsample(scale_factor=2, mode="nearest")]
            dec.append(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1))
        dec += [ResBlock(widths[0]), _norm(widths[0]), nn.SiLU()]
        dec.append(nn.Conv2d(widths[0], channels, 3, padding=1))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x * 2 - 1).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over every latent element."""
    return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()


# -- denoisers: (latents, timesteps, labels) -> predicted noise ------------------------------
class UNetDenoiser(nn.Module):
    """diffusers' ``UNet2DModel`` with a class embedding (the null class included)."""

    def __init__(
        self,
        latent_shape: tuple[int, int, int],
        num_labels: int,
        width: int,
        levels: int,
        layers_per_block: int,
        attention: bool,
    ) -> None:
        from diffusers import UNet2DModel

        super().__init__()
        channels = tuple(width * 2 ** min(i, 1) for i in range(levels))
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if attention:  # self-attention at the coarsest level (and in the mid block)
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.unet = UNet2DModel(
            sample_size=latent_shape[1:],
            in_channels=latent_shape[0],
            out_channels=latent_shape[0],
            block_out_channels=channels,
            layers_per_block=layers_per_block,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=math.gcd(8, width),
            attention_head_dim=8,
            add_attention=attention,
            class_embed_type=None,
            num_class_embeds=num_labels,
        )

    def forward(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(z, t, class_labels=labels).sample


class DiTBlock(nn.Module):
    """A DiT block with adaLN-Zero: the condition sets each norm's shift and scale and
    each residual's gate; the modulation is zero at initialization, so the block starts
    as the identity."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads, 0.0)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(width, width * mlp_ratio),
            nn.GELU(approximate="tanh"),
            nn.Linear(width * mlp_ratio, width),
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None].chunk(6, -1)
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1)
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


LABEL_STD = 1.0
"""The std of DiT's initial class embeddings; the paper's 0.02 learns the class too slowly
for a CPU budget (docs/fidelity.md, latent diffusion)."""


class DiT(nn.Module):
    """A small Diffusion Transformer (Peebles & Xie 2023) on latent patches.

    As the paper's code: the latent is cut into ``patch_size`` squared patches with fixed
    2-D sin-cos positions, the condition is the timestep's MLP embedding plus the class
    embedding, the blocks are adaLN-Zero, the final layer is an adaLN-modulated linear
    initialised to zero, other linear layers are Xavier-uniform and the timestep MLP
    normal(0.02). The class table starts at ``LABEL_STD`` where the paper uses 0.02.
    """

    def __init__(
        self,
        latent_shape: tuple[int, int, int],
        num_labels: int,
        width: int,
        depth: int,
        heads: int,
        patch_size: int,
    ) -> None:
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        super().__init__()
        channels, rows, cols = latent_shape
        self.patch_size, self.channels = patch_size, channels
        self.grid = (rows // patch_size, cols // patch_size)
        self.patch_embed = nn.Conv2d(channels, width, patch_size, stride=patch_size)
        # a buffer, not learned; saved, so checkpoints with the old learned positions load
        self.register_buffer("pos_embed", sincos_positions(width, *self.grid)[None])
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, width)
        self.label_embed = nn.Embedding(num_labels, width)
        self.blocks = nn.ModuleList(DiTBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, patch_size * patch_size * channels)
        self.initialize()

    def initialize(self) -> None:
        """The paper's initialization (``LABEL_STD`` aside); adaLN-Zero's layers to zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.patch_embed.weight
        nn.init.xavier_uniform_(weight.view(len(weight), -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.label_embed.weight, std=LABEL_STD)
        for layer in (self.time_embed.linear_1, self.time_embed.linear_2):
            nn.init.normal_(layer.weight, std=0.02)
        zero = [block.modulation[1] for block in self.blocks]
        for layer in (*zero, self.final_modulation[1], self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        x = self.patch_embed(z).flatten(2).transpose(1, 2) + self.pos_embed
        t = t.expand(b) if t.dim() == 1 else t.reshape(1).expand(b)
        c = self.time_embed(self.time_proj(t).to(x.dtype)) + self.label_embed(labels)
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.final_modulation(c)[:, None].chunk(2, -1)
        x = self.head(self.norm(x) * (1 + scale) + shift)  # (B, N, p*p*C)
        p, (gh, gw) = self.patch_size, self.grid
        x = x.reshape(b, gh, gw, p, p, self.channels).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, self.channels, gh * p, gw * p)


class EMA:
    """An exponential moving average of a module's floating-point state (parameters and
    buffers), for sampling. Step t uses ``min(decay, (1 + t) / (10 + t))`` (the warmup of
    diffusers' ``EMAModel``), so a short run's average is not dominated by the
    initialization; ``decay = 0`` keeps a copy of the latest weights."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def rate(self) -> float:
        """The decay the next ``update`` uses."""
        return min(self.decay, (1 + self.steps) / (10 + self.steps))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards ``module``'s current state by ``1 - rate()``."""
        rate = self.rate()
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                self.state[key].lerp_(value.detach(), 1 - rate)
            else:
                self.state[key].copy_(value)
        self.steps += 1

    @contextlib.contextmanager
    def applied(self, module: nn.Module) -> Iterator[None]:
        """``module`` holds the average inside the block, its own weights again after."""
        own = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.state)
        try:
            yield
        finally:
            module.load_state_dict(own)


# -- the model --------------------------------------------------------------------------
class LatentDiffusionModel(nn.Module):
    """The autoencoder, the denoiser and the noise schedule (``alphas_cumprod``).

    ``forward(images, labels=None, timesteps=None, noise=None)`` is one denoising step
    through the latent space: encode, add ``noise`` (default: none) at ``timesteps``
    (default: half way), predict the noise, and decode the implied clean latents. It
    exercises every part and traces for export; training uses the parts directly.
    """

    def __init__(
        self,
        autoencoder: KLAutoencoder,
        denoiser: nn.Module,
        num_classes: int,
        latent_shape: tuple[int, int, int],
        noise_config: dict[str, Any],
    ) -> None:
        from diffusers import DDPMScheduler

        super().__init__()
        self.autoencoder = autoencoder
        self.denoiser = denoiser
        self.num_classes = num_classes
        self.null_class = num_classes  # the label of the unconditional prediction
        self.latent_shape = latent_shape
        self.noise_config = dict(noise_config)
        schedule = DDPMScheduler(**self.noise_config)
        self.register_buffer("alphas_cumprod", schedule.alphas_cumprod.float().clone())
        self.register_buffer("scale_factor", torch.ones(()))  # set after the first stage

    def ddpm(self) -> Any:
        """The training noise scheduler (diffusers' ``DDPMScheduler``)."""
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self.noise_config)

    def to_latents(self, images: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Scaled latents of images: the posterior's mean, or a sample of it."""
        mean, logvar = self.autoencoder.encode(images)
        if sample:
            mean = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        return mean * self.scale_factor

    def from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Images decoded from scaled latents."""
        return self.autoencoder.decode(z / self.scale_factor)

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b = images.shape[0]
        z = self.to_latents(images, sample=self.training)
        if labels is None:
            labels = torch.full((b,), self.null_class, dtype=torch.long, device=images.device)
        if timesteps is None:
            timesteps = torch.full((b,), len(self.alphas_cumprod) // 2, device=images.device)
        alpha = self.alphas_cumprod[timesteps].to(z.dtype).reshape(b, 1, 1, 1)
        noisy = alpha.sqrt() * z + (1 - alpha).sqrt() * (0 if noise is None else noise)
        eps = self.denoiser(noisy, timesteps, labels)
        return self.from_latents((noisy - (1 - alpha).sqrt() * eps) / alpha.sqrt())


# -- sampling and metrics -------------------------------------------------------------------
@torch.inference_mode()
def sample(
    model: LatentDiffusionModel,
    labels: torch.Tensor,
    steps: int,
    guidance_scale: float,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Class-conditional images (on the decoder's scale, unclamped) by DDIM with guidance."""
    from diffusers import DDIMScheduler

    model.eval()
    scheduler = DDIMScheduler.from_config(model.ddpm().config)
    scheduler.set_timesteps(steps)
    z = torch.randn(len(labels), *model.latent_shape, generator=generator).to(device)
    labels = labels.to(device)
    null = torch.full_like(labels, model.null_class)
    guided = guidance_scale != 1.0
    for t in scheduler.timesteps:
        z_in, y_in = (torch.cat([z, z]), torch.cat([labels, null])) if guided else (z, labels)
        with autocast(device):
            eps = model.denoiser(z_in, t.to(device).expand(len(z_in)), y_in).float()
        if guided:
            eps_class, eps_null = eps.chunk(2)
            eps = eps_null + guidance_scale * (eps_class - eps_null)
        z = scheduler.step(eps, t, z).prev_sample
    with autocast(device):
        return model.from_latents(z).float()


def frechet_distance_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)) (the FID formula).

    The trace of the square root is the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix sigma1^(1/2) sigma2 sigma1^(1/2), which has the same spectrum.
    """
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    product = np.linalg.eigvalsh(root1 @ sigma2 @ root1).clip(min=0)
    diff = np.atleast_1d(mu1 - mu2)
    trace = np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(product).sum()
    return float(diff @ diff + trace)


def frechet_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """The Frechet distance between Gaussians fitted to feature rows ``a`` and ``b``."""
    a, b = (np.asarray(x, dtype=np.float64) for x in (a, b))
    return frechet_distance_from_stats(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )


class FixedClassifier:
    """The fixed judge of samples: logits and penultimate features of a trained CNN."""

    def __init__(self, tower: ConvTower, device: torch.device) -> None:
        self.tower = tower.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features) of images, float32 on the CPU."""
        logits, features = [], []
        for start in range(0, len(images), EVAL_BATCH_SIZE):
            x = images[start : start + EVAL_BATCH_SIZE].to(self.device)
            f = self.tower.features(x).mean(dim=(2, 3))
            features.append(f.float().cpu())
            logits.append(self.tower.head(f).float().cpu())
        return torch.cat(logits), torch.cat(features)


def _cache_dir() -> Path:
    if os.environ.get("AUTOPLAT_CACHE_DIR"):
        return Path(os.environ["AUTOPLAT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autoplat"


def classifier_key(splits: Splits) -> str:
    """A hash of the train images, labels and the classifier recipe."""
    digest = hashlib.sha256(repr(sorted(CLASSIFIER_RECIPE.items())).encode())
    for t in splits.train[:2]:
        digest.update(str((tuple(t.shape), t.dtype)).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def fixed_classifier(
    splits: Splits, device: torch.device, cache_dir: str | Path | None = None
) -> FixedClassifier:
    """The dataset's fixed classifier: loaded from the cache, else trained and published.

    Trained with seed 0 and ``CLASSIFIER_RECIPE`` on ``splits.train``; the file is
    published with an atomic link so concurrent trials end up using the same weights.
    """
    x, y = splits.train[0], splits.train[1]
    spec = splits.spec
    recipe = CLASSIFIER_RECIPE
    shape: tuple[int, int, int] = spec.input_shape  # type: ignore[assignment]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tower = ConvTower(shape, recipe["width"], recipe["depth"], spec.num_classes)
    path = Path(cache_dir or _cache_dir()) / f"classifier-{classifier_key(splits)}.pt"
    if not path.exists():
        _train_classifier(tower, x, y, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            save_tensors({k: v.detach().cpu() for k, v in tower.state_dict().items()}, tmp)
            os.link(tmp, path)  # fails when another trial published first: use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        sync_folder(path.parent)
    tower.load_state_dict(load_checkpoint(path))
    return FixedClassifier(tower, device)


def _train_classifier(
    tower: ConvTower, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> None:
    recipe = CLASSIFIER_RECIPE
    tower.to(device).train()
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(tower.parameters(), lr=recipe["lr"], weight_decay=0.05)
    steps = recipe["epochs"] * math.ceil(len(x) / recipe["batch_size"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(0, steps))
    x, y = x.to(device), y.to(device)
    for _ in range(recipe["epochs"]):
        order = torch.randperm(len(x), generator=generator).to(device)
        for start in range(0, len(x), recipe["batch_size"]):
            idx = order[start : start + recipe["batch_size"]]
            loss = F.cross_entropy(tower(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    tower.cpu()


@torch.inference_mode()
def denoise_loss(
    model: LatentDiffusionModel, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> float:
    """Noise-prediction MSE on a split with fixed noise and timesteps (``EVAL_SEED``)."""
    model.eval()
    ddpm = model.ddpm()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    total = 0.0
    for start in range(0, len(images), EVAL_BATCH_SIZE):
        x = images[start : start + EVAL_BATCH_SIZE].to(device)
        n = len(x)
        t = torch.randint(0, ddpm.config.num_train_timesteps, (n,), generator=generator)
        noise = torch.randn(n, *model.latent_shape, generator=generator).to(device)
        with autocast(device):
            z = model.to_latents(x).float()
            noisy = ddpm.add_noise(z, noise, t.to(device))
            eps = model.denoiser(noisy, t.to(device), labels[start : start + n].to(device))
        total += F.mse_loss(eps.float(), noise, reduction="sum").item() / noise[0].numel()
    return total / max(1, len(images))


@torch.inference_mode()
def recon_loss(model: LatentDiffusionModel, images: torch.Tensor, device: torch.device) -> float:
    """The autoencoder's pixel MSE (posterior mean) on ``images``."""
    model.eval()
    total = 0.0
    for start in range(0, len(images), EVAL_BATCH_SIZE):
        x = images[start : start + EVAL_BATCH_SIZE].to(device)
        with autocast(device):
            recon = model.autoencoder.decode(model.autoencoder.encode(x)[0]).float()
        total += F.mse_loss(recon, x, reduction="sum").item() / x[0].numel()
    return total / max(1, len(images))


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """``n`` labels cycling through the classes (0, 1, ..., K-1, 0, ...)."""
    return torch.arange(n) % num_classes


def evaluate_generation(
    model: LatentDiffusionModel,
    split: tuple[torch.Tensor, ...],
    classifier: FixedClassifier,
    hp: dict[str, Any],
    pixel_range: tuple[float, float],
    device: torch.device,
    seed: int = EVAL_SEED,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """The split's metrics (module docstring, no prefix), the samples and their labels."""
    images, labels = split[0], split[1]
    wanted = balanced_labels(int(hp["eval_samples"]), model.num_classes)
    generator = torch.Generator().manual_seed(seed)
    samples = sample(
        model, wanted, int(hp["sample_steps"]), float(hp["guidance_scale"]), generator, device
    ).clamp(*pixel_range)
    logits, features = classifier(samples.cpu())
    _, real_features = classifier(images)
    accuracy = (logits.argmax(1) == wanted).float().mean().item()
    loss = denoise_loss(model, images, labels, device)
    metrics = {
        "denoise_loss": loss,
        "loss": loss,
        "recon_loss": recon_loss(model, images, device),
        "sample_accuracy": accuracy,
        "accuracy": accuracy,
        "fid": frechet_distance(features.numpy(), real_features.numpy()),
    }
    return metrics, samples.cpu(), wanted


def save_grid(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, path: Path, cell: int = 32
) -> Path:
    """A PNG with a row of samples per class, each upscaled to about ``cell`` pixels."""
    from PIL import Image

    per_class = [images[labels == k] for k in range(num_classes)]
    cols = max(len(p) for p in per_class)
    c, h, w = images.shape[1:]
    scale = max(1, cell // max(h, w))
    lo, hi = float(images.min()), float(images.max())
    grid = torch.ones(c, num_classes * (h + 1), cols * (w + 1))
    for row, part in enumerate(per_class):
        for col, image in enumerate(part):
            y0, x0 = row * (h + 1), col * (w + 1)
            grid[:, y0 : y0 + h, x0 : x0 + w] = (image - lo) / max(hi - lo, 1e-8)
    pixels = (grid.clamp(0, 1) * 255).round().byte()
    pixels = pixels.repeat_interleave(scale, 1).repeat_interleave(scale, 2).numpy()
    array = pixels[0] if c == 1 else pixels[:3].transpose(1, 2, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def trial_dir() -> Path:
    """The running Ray Tune trial's folder in the study's storage (``runs/ray/<run>/<trial>``,
    which outlives the trial, unlike Ray's working folder); else a new temporary folder."""
    import sys

    if "ray" in sys.modules:  # only a Ray worker has a trial context; importing Ray is slow
        try:
            from ray import tune

            found = tune.get_context().get_storage().trial_fs_path
        except Exception:  # noqa: BLE001 - not inside a Tune trial
            found = None
        if found:
            return Path(found)
    return Path(tempfile.mkdtemp(prefix="autoplat-latent-diffusion-"))


# -- training ---------------------------------------------------------------------------
def _check_trainer_params(hp: dict[str, Any]) -> None:
    for key in ("epochs", "batch_size", "ae_epochs", "sample_steps", "eval_samples"):
        if int(hp[key]) < 1:
            raise TrialFailed(f"latent-diffusion: {key} must be at least 1, got {hp[key]}")
    for key in ("cfg_dropout", "ema_decay"):
        if not 0 <= float(hp[key]) < 1:
            raise TrialFailed(f"latent-diffusion: {key} must be in [0, 1), got {hp[key]}")
    if float(hp["guidance_scale"]) < 0 or float(hp["kl_weight"]) < 0:
        raise TrialFailed(
            "latent-diffusion: guidance_scale and kl_weight must be >= 0, got "
            f"{hp['guidance_scale']} and {hp['kl_weight']}"
        )


def _optimizer(
    params: Any, lr: float, weight_decay: float, steps: int, warmup: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, steps))


def train_autoencoder(
    model: LatentDiffusionModel,
    images: torch.Tensor,
    hp: dict[str, Any],
    generator: torch.Generator,
    device: torch.device,
) -> float:
    """Stage 1: train the autoencoder, then freeze it and set ``scale_factor``.

    Returns the last epoch's mean training loss (reconstruction + weighted KL).
    """
    ae = model.autoencoder
    batch_size, epochs = int(hp["batch_size"]), int(hp["ae_epochs"])
    steps = epochs * math.ceil(len(images) / batch_size)
    optimizer, scheduler = _optimizer(ae.parameters(), float(hp["ae_lr"]), 0.0, steps, 0)
    kl_weight = float(hp["kl_weight"])

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x = images[idx]
        mean, logvar = ae.encode(x)
        recon = ae.decode(mean + (0.5 * logvar).exp() * torch.randn_like(mean))
        return F.mse_loss(recon.float(), x) + kl_weight * kl_divergence(
            mean.float(), logvar.float()
        )

    loss = 0.0
    for epoch in range(1, epochs + 1):
        loss = train_epoch(
            ae, optimizer, scheduler, len(images), batch_size, generator, batch_loss,
            epoch, "the autoencoder's loss",
        )  # fmt: skip
    ae.eval().requires_grad_(False)
    with torch.inference_mode(), autocast(device):
        batches = images.split(EVAL_BATCH_SIZE)
        means = torch.cat([ae.encode(x)[0].float() for x in batches])
    model.scale_factor.fill_(1.0 / max(float(means.std()), 1e-6))
    return loss


def train_latent_diffusion(
    model: LatentDiffusionModel,
    splits: Splits,
    params: dict[str, Any],
    report: Callable[[int, dict[str, Any]], None],
    seed: int,
    *,
    cache_dir: str | Path | None = None,
    artifact_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train the autoencoder, then the denoiser, reporting after every denoiser epoch.

    Args:
        model: A ``LatentDiffusionModel``.
        splits: ``(images, labels)`` per split; labels are class indices.
        params: The keys of ``TRAINER_PARAMS`` and ``LatentDiffusion.trainer_params``.
        report: Called as ``report(epoch, metrics)`` with train_loss (denoising),
            train_recon_loss and the val metrics; the last call adds the test metrics and
            ``artifact_samples``, the path of the sample grid PNG.
        seed: Seeds torch, the batch order and the label dropout.
        cache_dir: Where the fixed classifier is cached (default: module docstring).
        artifact_dir: Where the sample grid goes (default: the Ray trial's folder).

    Returns:
        The metrics of the last report.

    Raises:
        TrialFailed: A loss became NaN or infinite, or a trainer param is out of range.
    """
    hp = {**TRAINER_PARAMS, **LatentDiffusion.trainer_params}
    hp |= {k: v for k, v in params.items() if k in hp}
    _check_trainer_params(hp)
    epochs, batch_size, generator, device = start_training(model, hp, seed)
    classifier = fixed_classifier(splits, device, cache_dir)
    images, labels = splits.train[0].to(device), splits.train[1].to(device)
    pixel_range = (float(splits.train[0].min()), float(splits.train[0].max()))

    ae_loss = train_autoencoder(model, images, hp, generator, device)
    train_recon = recon_loss(model, splits.train[0], device)
    ddpm = model.ddpm()
    n_train, timesteps = len(images), ddpm.config.num_train_timesteps
    steps = epochs * math.ceil(n_train / batch_size)
    warmup = min(int(hp["warmup_epochs"]) * math.ceil(n_train / batch_size), steps)
    optimizer, scheduler = _optimizer(
        model.denoiser.parameters(), float(hp["lr"]), float(hp["weight_decay"]), steps, warmup
    )
    ema = EMA(model.denoiser, float(hp["ema_decay"]))
    optimizer.register_step_post_hook(lambda *_: ema.update(model.denoiser))
    cfg_dropout = float(hp["cfg_dropout"])
    metrics: dict[str, Any] = {}

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        n = len(idx)
        drop = torch.rand(n, generator=generator).to(device) < cfg_dropout
        y = labels[idx].masked_fill(drop, model.null_class)
        t = torch.randint(0, timesteps, (n,), generator=generator).to(device)
        with torch.no_grad():
            z = model.to_latents(images[idx], sample=True).float()
        noise = torch.randn_like(z)
        return F.mse_loss(model.denoiser(ddpm.add_noise(z, noise, t), t, y).float(), noise)

    for epoch in range(1, epochs + 1):
        train_loss = train_epoch(
            model.denoiser, optimizer, scheduler, n_train, batch_size, generator, batch_loss,
            epoch, "the denoising loss",
        )  # fmt: skip
        metrics = {"train_loss": train_loss, "train_recon_loss": train_recon}
        metrics["train_ae_loss"] = ae_loss  # the last autoencoder epoch: recon + KL term
        if epoch == epochs:  # the average stays: the test metrics and the checkpoint use it
            model.denoiser.load_state_dict(ema.state)
        with ema.applied(model.denoiser):
            val, _, _ = evaluate_generation(model, splits.val, classifier, hp, pixel_range, device)
        metrics |= {f"val_{k}": v for k, v in val.items()}
        if epoch == epochs:
            test, samples, wanted = evaluate_generation(
                model, splits.test, classifier, hp, pixel_range, device, seed=EVAL_SEED + 1
            )
            metrics |= {f"test_{k}": v for k, v in test.items()}
            folder = Path(artifact_dir) if artifact_dir is not None else trial_dir()
            grid = save_grid(samples, wanted, model.num_classes, folder / "samples.png")
            metrics["artifact_samples"] = str(grid)
        report(epoch, metrics)
    return metrics


# -- the architecture ------------------------------------------------------------------------
class LatentDiffusion(Architecture):
    """Latent diffusion (Rombach et al. 2022) for small images; see the module docstring."""

    name: ClassVar[str] = "latent-diffusion"
    task: ClassVar[str] = "generation"
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    default_space: ClassVar[str] = "latent_diffusion"
    defaults: ClassVar[dict[str, Any]] = {
        # autoencoder
        "latent_channels": 4,
        "ae_width": 32,
        "downsample": 1,  # stride-2 stages: latents are H / 2**downsample
        # denoiser
        "denoiser": "unet",  # or "dit"
        "unet_width": 32,
        "unet_levels": 2,
        "layers_per_block": 1,
        "unet_attention": False,
        "dit_width": 64,
        "dit_depth": 2,
        "dit_heads": 4,
        "dit_patch": 2,
        # noise schedule (diffusers' DDPMScheduler)
        "timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
    }
    trainer_params: ClassVar[dict[str, Any]] = {
        "ae_epochs": 10,
        "ae_lr": 2e-3,
        "kl_weight": 1e-4,
        "cfg_dropout": 0.1,
        "ema_decay": 0.999,
        "sample_steps": 25,
        "guidance_scale": 2.0,
        "eval_samples": 100,
    }
    metrics: ClassVar[dict[str, str]] = {
        "val_denoise_loss": "minimize",
        "val_recon_loss": "minimize",
        "val_sample_accuracy": "maximize",
        "val_fid": "minimize",
    }
    param_ranges: ClassVar[dict[str, Range]] = {
        "latent_channels": SIZE,
        "ae_width": SIZE,
        "downsample": ints(0, 4),
        "unet_width": SIZE,
        "unet_levels": LAYERS,
        "layers_per_block": LAYERS,
        "dit_width": SIZE,
        "dit_depth": LAYERS,
        "dit_heads": LAYERS,
        "dit_patch": PATCH,
        "denoiser": one_of(*DENOISERS),
        "beta_schedule": one_of(*BETA_SCHEDULES),
        "timesteps": ints(2, 100_000, ALLOCATION),
        "ae_epochs": EPOCHS,
        "ae_lr": POSITIVE,
        "kl_weight": NON_NEGATIVE,
        "cfg_dropout": DROPOUT,
        "ema_decay": floats(0, 1, open_high=True),
        "sample_steps": ints(1, 100_000, ALLOCATION),
        "guidance_scale": NON_NEGATIVE,
        "eval_samples": ints(1, 1_000_000, ALLOCATION),
    }

    def check_params(self, params: dict[str, Any], spec: DataSpec | None = None) -> str | None:
        """Why these params cannot build the model (for ``spec``'s images), or None."""
        if (reason := self.unknown_params(params)) is not None:
            return reason
        p = {**self.defaults, **params}
        if (reason := self.range_problem(p)) is not None:
            return reason
        if p["denoiser"] == "dit" and (p["dit_width"] % p["dit_heads"] or p["dit_width"] % 4):
            return (
                f"latent-diffusion: dit_width {p['dit_width']} must be divisible by dit_heads "
                f"{p['dit_heads']} and by 4 (the 2-D sin-cos positions)"
            )
        if p["denoiser"] == "unet" and p["unet_attention"] and p["unet_width"] % 8:
            return (
                "latent-diffusion: with unet_attention, unet_width must be a multiple of 8 "
                f"(8 channels per head), got {p['unet_width']}"
            )
        if spec is None:
            return None
        if spec.task not in ("classification", "generation") or spec.num_classes < 2:
            return (
                "latent-diffusion: needs labeled images (images, class labels) for "
                f"class-conditional generation, got a {spec.task} {spec.modality} dataset"
            )
        if len(spec.input_shape) != 3:
            return f"latent-diffusion: needs images shaped (C, H, W), got {spec.input_shape}"
        _, rows, cols = spec.input_shape
        factor = 2 ** p["downsample"]
        if rows % factor or cols % factor:
            return (
                f"latent-diffusion: downsample {p['downsample']} halves the image "
                f"{p['downsample']} times, but {rows}x{cols} is not divisible by {factor}; "
                "lower downsample"
            )
        lrows, lcols = rows // factor, cols // factor
        if p["denoiser"] == "unet":
            unet_factor = 2 ** (p["unet_levels"] - 1)
            if lrows % unet_factor or lcols % unet_factor:
                return (
                    f"latent-diffusion: the UNet's {p['unet_levels']} levels need latents "
                    f"divisible by {unet_factor}, but they are {lrows}x{lcols}; lower "
                    "unet_levels or downsample"
                )
        elif lrows % p["dit_patch"] or lcols % p["dit_patch"]:
            return (
                f"latent-diffusion: dit_patch {p['dit_patch']} does not divide the latents "
                f"{lrows}x{lcols}"
            )
        return None

    def build(self, params: dict[str, Any], spec: DataSpec) -> LatentDiffusionModel:
        """Build the model; params missing from ``params`` take ``defaults``.

        Raises:
            ValueError: ``check_params`` found a reason these params cannot work.
        """
        p = self.resolve_params(params, spec)
        channels, rows, cols = spec.input_shape
        factor = 2 ** int(p["downsample"])
        latent_shape = (int(p["latent_channels"]), rows // factor, cols // factor)
        autoencoder = KLAutoencoder(
            channels, int(p["ae_width"]), int(p["downsample"]), int(p["latent_channels"])
        )
        num_labels = spec.num_classes + 1  # the null class of classifier-free guidance
        denoiser: nn.Module
        if p["denoiser"] == "unet":
            denoiser = UNetDenoiser(
                latent_shape,
                num_labels,
                int(p["unet_width"]),
                int(p["unet_levels"]),
                int(p["layers_per_block"]),
                bool(p["unet_attention"]),
            )
        else:
            denoiser = DiT(
                latent_shape,
                num_labels,
                int(p["dit_width"]),
                int(p["dit_depth"]),
                int(p["dit_heads"]),
                int(p["dit_patch"]),
            )
        noise_config = {
            "num_train_timesteps": int(p["timesteps"]),
            "beta_schedule": str(p["beta_schedule"]),
            "clip_sample": False,  # latents are not bounded to [-1, 1]
        }
        return LatentDiffusionModel(
            autoencoder, denoiser, spec.num_classes, latent_shape, noise_config
        )

    def train(
        self,
        model: torch.nn.Module,
        splits: Splits,
        params: dict[str, Any],
        report: Callable[[int, dict[str, float]], None],
        seed: int,
    ) -> dict[str, float]:
        """Train with ``train_latent_diffusion``."""
        return train_latent_diffusion(model, splits, params, report, seed)  # type: ignore[arg-type]

    def onnx_parts(self, model: torch.nn.Module, splits: Splits) -> dict[str, OnnxPart]:
        """The denoiser (scaled latents, timesteps, labels -> predicted noise) and the
        decoder (scaled latents -> images); the DDIM loop and guidance stay in Python."""
        assert isinstance(model, LatentDiffusionModel)
        images, labels = splits.test[0], splits.test[1]
        with torch.no_grad():
            z = model.to_latents(images)
        generator = torch.Generator().manual_seed(0)
        t = torch.randint(0, len(model.alphas_cumprod), (len(z),), generator=generator)
        facts = {
            "scale_factor": str(float(model.scale_factor)),
            "null_class": str(model.null_class),
            "num_train_timesteps": str(len(model.alphas_cumprod)),
        }
        return {
            "denoiser": OnnxPart(
                model.denoiser,
                (z, t, labels),
                ("latent", "timestep", "label"),
                "latent",
                "noise",
                metadata=facts,
            ),
            "decoder": OnnxPart(
                _Decoder(model), (z,), ("latent",), "latent", "image", metadata=facts
            ),
        }


class _Decoder(nn.Module):
    """Scaled latents to images: the export graph of ``from_latents``."""

    def __init__(self, model: LatentDiffusionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.from_latents(z)
