"""Latent diffusion: the Frechet distance, both training stages, guided DDIM samples that a
fixed digits classifier recognizes, the sample grid, export, and bad params."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoplat.core.config import load_config
from autoplat.core.errors import ConfigError
from autoplat.core.interfaces import Architecture, DataSpec, Splits
from autoplat.core.registry import get_registry
from autoplat.core.training import TrialFailed
from autoplat.plugins.architectures.latent_diffusion import (
    EMA,
    LABEL_STD,
    LatentDiffusion,
    _optimizer,
    evaluate_generation,
    fixed_classifier,
    frechet_distance,
    frechet_distance_from_stats,
    recon_loss,
)
from autoplat.plugins.datasets.digits import Digits
from autoplat.plugins.datasets.splits import SplitOptions
from autoplat.testing import ArchitectureContract, run_platform

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"latent_channels": 2, "ae_width": 16, "unet_width": 16}  # a UNet, 4x4x2 latents
TRAIN = {
    "epochs": 5,
    "ae_epochs": 5,
    "lr": 5e-3,
    "batch_size": 64,
    "eval_samples": 50,
    "sample_steps": 8,
    "guidance_scale": 2.0,
}
CPU = torch.device("cpu")
DIGITS_SPEC = Digits.spec


# -- Frechet distance ------------------------------------------------------------------------
def test_frechet_distance_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))  # shared eigenvectors: the product commutes
    a, b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([4.0, 1.0, 0.5, 0.25])
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    sigma1, sigma2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) == pytest.approx(closed, rel=1e-8)
    assert frechet_distance_from_stats(mu1, sigma1, mu1, sigma1) == pytest.approx(0, abs=1e-8)
    # from samples of two 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    x = rng.normal(1.0, 2.0, size=(200_000, 1))
    y = rng.normal(-0.5, 0.5, size=(200_000, 1))
    expected = 1.5**2 + 1.5**2
    assert frechet_distance(x, y) == pytest.approx(expected, rel=0.01)


# -- training on digits ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> Splits:
    return Digits().load(SplitOptions(), seed=0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("classifier-cache")


@pytest.fixture(scope="module")
def trained(digits: Splits, cache_dir, tmp_path_factory: pytest.TempPathFactory):
    """A tiny model trained on digits (~25 s on one core), its reports and baselines."""
    from autoplat.plugins.architectures.latent_diffusion import train_latent_diffusion

    torch.manual_seed(0)
    model = LatentDiffusion().build(TINY, digits.spec)
    untrained_recon = recon_loss(model, digits.val[0], CPU)
    reports: list[dict] = []
    artifacts = tmp_path_factory.mktemp("artifacts")
    final = train_latent_diffusion(
        model,
        digits,
        TRAIN,
        lambda epoch, m: reports.append(m),
        seed=0,
        cache_dir=cache_dir,
        artifact_dir=artifacts,
    )
    # the baseline: the same frozen autoencoder with an untrained denoiser
    torch.manual_seed(0)
    baseline = LatentDiffusion().build(TINY, digits.spec)
    baseline.autoencoder.load_state_dict(model.autoencoder.state_dict())
    baseline.scale_factor.copy_(model.scale_factor)
    classifier = fixed_classifier(digits, CPU, cache_dir)
    hp = LatentDiffusion.trainer_params | TRAIN
    base, _, _ = evaluate_generation(baseline, digits.val, classifier, hp, (0.0, 1.0), CPU)
    return {"model": model, "reports": reports, "final": final, "baseline": base} | {
        "untrained_recon": untrained_recon
    }


@pytest.mark.slow  # trains for seconds
def test_autoencoder_reconstruction_loss_falls(trained) -> None:
    final = trained["final"]
    assert final["val_recon_loss"] < 0.3 * trained["untrained_recon"], (
        trained["untrained_recon"],
        final["val_recon_loss"],
    )
    assert final["val_recon_loss"] < 0.05  # pixels in [0, 1]: a blurry but faithful digit
    assert not any(p.requires_grad for p in trained["model"].autoencoder.parameters())


@pytest.mark.slow  # trains for seconds
def test_denoising_loss_falls(trained) -> None:
    reports = trained["reports"]
    assert len(reports) == TRAIN["epochs"]
    assert reports[-1]["train_loss"] < 0.7 * reports[0]["train_loss"]
    assert reports[-1]["val_denoise_loss"] < reports[0]["val_denoise_loss"]
    assert trained["final"]["val_denoise_loss"] < trained["baseline"]["denoise_loss"]
    assert not any(k.startswith("test_") for k in reports[0])


@pytest.mark.slow  # trains for seconds
def test_guided_samples_are_recognized_as_their_class(trained) -> None:
    final, base = trained["final"], trained["baseline"]
    print(
        f"sample accuracy val {final['val_sample_accuracy']:.2f} test "
        f"{final['test_sample_accuracy']:.2f} (untrained denoiser {base['sample_accuracy']:.2f}); "
        f"FID val {final['val_fid']:.2f} test {final['test_fid']:.2f} (untrained "
        f"{base['fid']:.2f}); recon {final['val_recon_loss']:.4f}"
    )
    for split in ("val", "test"):  # chance is 0.1
        assert final[f"{split}_sample_accuracy"] >= 0.35, final
    assert final["val_sample_accuracy"] >= base["sample_accuracy"] + 0.2
    assert final["val_fid"] < 0.8 * base["fid"]
    assert final["val_accuracy"] == final["val_sample_accuracy"]


@pytest.mark.slow
def test_dit_samples_are_recognized_as_their_class(trained, digits: Splits, cache_dir) -> None:
    """The DiT with the paper's recipe (patches of 2, sin-cos positions, adaLN-Zero, EMA,
    warmup, guidance) on the UNet's budget: its samples are their class far above chance
    (benchmarks/dit_vs_unet.py measures it at size)."""
    from autoplat.plugins.architectures.latent_diffusion import train_latent_diffusion

    torch.manual_seed(0)
    params = {"denoiser": "dit", "latent_channels": 2, "ae_width": 16}
    model = LatentDiffusion().build(params, digits.spec)
    final = train_latent_diffusion(
        model, digits, TRAIN | {"epochs": 10}, lambda *a: None, 0, cache_dir=cache_dir
    )
    unet = trained["final"]
    print(f"dit {final['val_sample_accuracy']:.2f}, unet {unet['val_sample_accuracy']:.2f}")
    for split in ("val", "test"):  # chance is 0.1
        assert final[f"{split}_sample_accuracy"] >= 0.4, final
    assert final["val_sample_accuracy"] >= unet["val_sample_accuracy"] - 0.1


@pytest.mark.slow  # trains for seconds
def test_sample_grid_is_a_png_with_a_row_per_class(trained) -> None:
    path = trained["final"]["artifact_samples"]
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "L"
        width, height = image.size
    assert height == 10 * 9 * 4 and width == 5 * 9 * 4  # 10 classes x 5 samples, 8+1 px x4


@pytest.mark.slow  # trains for seconds (unless an earlier test of the module did)
def test_fixed_classifier_is_cached_and_accurate(digits: Splits, cache_dir) -> None:
    first = fixed_classifier(digits, CPU, cache_dir)
    files = list(cache_dir.glob("classifier-*.pt"))
    assert len(files) == 1  # trained once for the module, loaded by every later call
    logits, features = first(digits.val[0])
    assert features.shape == (len(digits.val[0]), 128)
    assert (logits.argmax(1) == digits.val[1]).float().mean() > 0.9
    again, _ = fixed_classifier(digits, CPU, cache_dir)(digits.val[0])
    assert torch.equal(logits, again)


# -- the DiT recipe (Peebles & Xie 2023) --------------------------------------------------------
def mae_sincos_2d(width: int, rows: int, cols: int) -> np.ndarray:
    """MAE's / DiT's ``get_2d_sincos_pos_embed`` (numpy, as published), for a grid."""

    def one_d(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))
    return np.concatenate([one_d(width // 2, grid[0]), one_d(width // 2, grid[1])], axis=1)


def test_dit_positions_are_the_papers_fixed_sincos() -> None:
    from autoplat.plugins.layers import sincos_positions

    for width, rows, cols in ((16, 2, 2), (64, 3, 5)):
        got = sincos_positions(width, rows, cols).numpy()
        np.testing.assert_allclose(got, mae_sincos_2d(width, rows, cols), atol=1e-6)
    model = LatentDiffusion().build({"denoiser": "dit", "dit_width": 32}, DIGITS_SPEC)
    dit = model.denoiser
    assert dit.grid == (2, 2)  # 4x4 latents, the default patch of 2
    assert "pos_embed" not in dict(dit.named_parameters())  # fixed, not learned
    np.testing.assert_allclose(dit.pos_embed[0].numpy(), mae_sincos_2d(32, 2, 2), atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_positions(18, 2, 2)


def test_dit_starts_as_the_identity_with_adaln_zero() -> None:
    torch.manual_seed(0)
    params = {"denoiser": "dit", "dit_width": 32, "dit_depth": 3}
    dit = LatentDiffusion().build(params, DIGITS_SPEC).denoiser
    z, t = torch.randn(5, 4, 4, 4), torch.tensor([0, 10, 500, 900, 999])
    labels = torch.tensor([0, 3, 9, 10, 10])  # 10: the null class
    x = dit.patch_embed(z).flatten(2).transpose(1, 2) + dit.pos_embed
    c = dit.time_embed(dit.time_proj(t)) + dit.label_embed(labels)
    for block in dit.blocks:  # the gates are zero: each block returns its input
        assert torch.equal(block(x, c), x)
        assert block.modulation[1].weight.abs().sum() == 0
    assert torch.equal(dit(z, t, labels), torch.zeros_like(z))  # zero final layer
    # ... and a gradient step moves the gates, so the blocks start to learn
    torch.nn.functional.mse_loss(dit(z, t, labels), torch.randn_like(z)).backward()
    assert dit.head.weight.grad.abs().sum() > 0
    assert dit.blocks[0].modulation[1].weight.grad is not None
    # the paper's init elsewhere: Xavier-uniform linears, normal(0.02) timestep MLP
    qkv = dit.blocks[0].attn.qkv.weight
    assert qkv.abs().max() <= (6 / sum(qkv.shape)) ** 0.5 and qkv.abs().max() > 0
    assert dit.time_embed.linear_1.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert dit.label_embed.weight.std().item() == pytest.approx(LABEL_STD, rel=0.2)


def test_ema_average_with_warmup_and_swap() -> None:
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    ema = EMA(layer, decay=0.9)
    assert ema.rate() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): the first step mostly copies
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema.update(layer)
    assert ema.state["weight"] == pytest.approx(torch.full((1, 2), 0.9))
    rates = []
    for _ in range(100):  # (1 + t) / (10 + t) reaches 0.9 at t = 80
        rates.append(ema.rate())
        ema.update(layer)
    assert rates[:3] == pytest.approx([2 / 11, 3 / 12, 4 / 13])
    assert rates[-1] == 0.9  # capped at decay
    expected = 1 - 0.1 * np.prod([1 - r for r in rates])  # the gap shrinks by each rate
    assert ema.state["weight"][0, 0].item() == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        layer.weight.fill_(5.0)
    with ema.applied(layer):
        assert torch.equal(layer.weight, ema.state["weight"])
    assert torch.equal(layer.weight, torch.full((1, 2), 5.0))  # its own weights are back
    frozen = EMA(layer, decay=0.0)  # decay 0: always the latest weights
    with torch.no_grad():
        layer.weight.fill_(-2.0)
    frozen.update(layer)
    assert torch.equal(frozen.state["weight"], layer.weight)


def test_denoiser_lr_warms_up_then_decays() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = _optimizer([param], 1e-3, 0.0, steps=10, warmup=4)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])  # linear warmup
    assert lrs[4] == pytest.approx(1e-3) and lrs[5:] == sorted(lrs[5:], reverse=True)
    assert lrs[-1] < 0.1e-3  # cosine to zero at the end


@pytest.mark.slow  # trains for seconds
def test_training_samples_with_the_ema_weights(digits: Splits, cache_dir) -> None:
    """The trainer averages every optimizer step and leaves the average in the model, so
    the test metrics and the checkpoint use the weights sampling used."""
    from autoplat.plugins.architectures.latent_diffusion import train_latent_diffusion

    params = {"denoiser": "dit", "dit_width": 16, "dit_heads": 2, "latent_channels": 2}
    few = TRAIN | {"epochs": 1, "ae_epochs": 1, "eval_samples": 10, "sample_steps": 2}
    kept = {}
    for decay in (0.0, 0.99):
        torch.manual_seed(0)
        model = LatentDiffusion().build(params, digits.spec)
        train_latent_diffusion(
            model, digits, few | {"ema_decay": decay}, lambda *a: None, 0, cache_dir=cache_dir
        )
        kept[decay] = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    # the same training run, kept as the raw weights (decay 0) or their average
    assert any(not torch.equal(kept[0.0][k], kept[0.99][k]) for k in kept[0.0])


# -- the architecture contract, export and errors ---------------------------------------------
class TestLatentDiffusionContract(ArchitectureContract):
    """The default space's corners (a UNet and a DiT) build, train and export whole.

    ``forward`` is one denoising step through the latent space (encoder, denoiser,
    decoder), so the contract's ONNX export covers all three parts in one graph.
    """

    @pytest.fixture
    def architecture(self) -> Architecture:
        return LatentDiffusion()

    @pytest.fixture
    def data_spec(self) -> DataSpec:
        return DataSpec("generation", "image", (1, 8, 8), 10)


@pytest.mark.parametrize("denoiser", ["unet", "dit"])
def test_denoiser_and_decoder_export_to_onnx(digits: Splits, denoiser: str) -> None:
    import onnxruntime

    torch.manual_seed(0)
    model = LatentDiffusion().build(TINY | {"denoiser": denoiser}, digits.spec).eval()
    parts = LatentDiffusion().onnx_parts(model, digits)  # what `platform export` writes
    assert set(parts) == {"denoiser", "decoder"}
    assert parts["denoiser"].input_names == ("latent", "timestep", "label")
    for part in parts.values():
        module, inputs, names = part.module, part.inputs, list(part.input_names)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, inputs, buffer, dynamo=False, opset_version=17, input_names=names
            )
        session = onnxruntime.InferenceSession(
            buffer.getvalue(), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})
        with torch.no_grad():
            assert abs(got - module(*inputs).numpy()).max() <= 1e-4


def test_bad_params_are_refused_clearly(digits: Splits) -> None:
    arch, spec = LatentDiffusion(), digits.spec
    assert arch.check_params({}, spec) is None
    assert "denoiser must be one of 'unet', 'dit', got 'gan'" in arch.check_params(
        {"denoiser": "gan"}
    )
    assert "unknown params unet_depth" in arch.check_params({"unet_depth": 2})
    assert "not divisible by 16" in arch.check_params({"downsample": 4}, spec)
    assert "unet_levels" in arch.check_params({"unet_levels": 3, "downsample": 2}, spec)
    assert "dit_heads" in arch.check_params({"denoiser": "dit", "dit_width": 30})
    shapes = DataSpec("contrastive", "image-text", (3, 16, 16), 5, vocab_size=9, text_length=4)
    assert "labeled images" in arch.check_params({}, shapes)
    with pytest.raises(ValueError, match="downsample"):
        arch.build({"downsample": 4}, spec)
    model = arch.build(TINY, spec)
    with pytest.raises(TrialFailed, match="cfg_dropout must be in"):
        arch.train(model, digits, {"cfg_dropout": 1.5}, lambda *a: None, 0)
    with pytest.raises(TrialFailed, match="ema_decay must be in"):
        arch.train(model, digits, {"ema_decay": 1.0}, lambda *a: None, 0)
    assert "ema_decay" in arch.check_params({"ema_decay": 1.0})
    assert "by 4" in arch.check_params({"denoiser": "dit", "dit_width": 34, "dit_heads": 2})


CONFIG = """
[study]
name = "ld"
trials = 1
metric = "{metric}"

[architecture]
name = "latent-diffusion"

[dataset]
name = "{dataset}"

[space]
denoiser = {denoiser}
epochs = 1
"""


def test_config_ranks_by_sample_metrics_and_refuses_bad_input(write_config) -> None:
    registry = get_registry()
    ok = write_config(CONFIG.format(metric="val_fid", dataset="digits", denoiser='["unet"]'))
    resolved = load_config(ok, registry)
    assert resolved.direction == "minimize"
    text = CONFIG.format(metric="val_sample_accuracy", dataset="digits", denoiser='["unet"]')
    assert load_config(write_config(text), registry).direction == "maximize"
    bad = write_config(
        CONFIG.format(metric="val_fid", dataset="digits", denoiser='["unet", "gan"]')
    )
    with pytest.raises(
        ConfigError, match=r"space.denoiser: must be one of 'unet', 'dit', got 'gan'"
    ):
        load_config(bad, registry)
    text = CONFIG.format(metric="val_fid", dataset="shapes", denoiser='["unet"]')
    with pytest.raises(ConfigError, match="cannot feed architecture 'latent-diffusion'"):
        load_config(write_config(text + "captions = true\n"), registry)


@pytest.mark.slow
def test_search_records_the_sample_grid_and_exports_both_parts(
    tmp_path, ray_address, cache_dir
) -> None:
    """One real trial through `platform search`: show names the grid, export writes the
    denoiser and the decoder, each checked against torch."""
    text = Path("examples/latent_diffusion_digits.toml").read_text()
    text = text.replace("trials = 4", "trials = 1").replace("epochs = 10", "epochs = 1")
    text = text.replace('denoiser = ["unet", "dit"]', 'denoiser = ["unet"]')
    text = text.replace("eval_samples = 100", "eval_samples = 20")
    config = tmp_path / "ld.toml"
    config.write_text(text.replace("ae_epochs = 10", "ae_epochs = 1"))
    url = f"sqlite:///{tmp_path / 'ld.db'}"
    env = {"AUTOPLAT_CACHE_DIR": str(cache_dir)}
    result = run_platform("search", str(config), "--storage", url, "--address", ray_address, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(
        run_platform("show", "latent-diffusion-digits", "--storage", url, "--json").stdout
    )
    grid = Path(shown["best"]["artifacts"]["samples"])
    assert grid.exists() and Image.open(grid).format == "PNG"
    table = run_platform("show", "latent-diffusion-digits", "--storage", url).stdout
    assert "best samples:" in table and "samples.png" in table
    out = tmp_path / "ld.onnx"
    exported = run_platform(
        "export", "latent-diffusion-digits", "--storage", url, "--out", str(out)
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "ld.denoiser.onnx").exists() and (tmp_path / "ld.decoder.onnx").exists()
