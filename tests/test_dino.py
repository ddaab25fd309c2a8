"""DINO self-distillation: crops, losses by hand, the trainer on digits, distillation, config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autoplat import search_spaces
from autoplat.core.config import load_config
from autoplat.core.interfaces import Architecture, DataSpec, Splits
from autoplat.core.registry import get_registry
from autoplat.core.space import NamedSpace
from autoplat.core.training import TRAINER_PARAMS, TrialFailed, save_checkpoint
from autoplat.plugins.architectures.dino import (
    DINO,
    DINOModel,
    dino_loss,
    ema_update,
    evaluate_features,
    ibot_loss,
    knn_accuracy,
    koleo_loss,
    multi_crop,
    random_masks,
    random_resized_crop,
    teacher_momentum_at,
    teacher_probs,
    teacher_temp_at,
    updated_center,
)
from autoplat.plugins.datasets.digits import Digits
from autoplat.plugins.datasets.splits import SplitOptions
from autoplat.testing import ArchitectureContract

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"depth": 2, "width": 64, "heads": 4, "patch_size": 2}
TINY = {"depth": 1, "width": 32, "heads": 2, "patch_size": 4, "prototypes": 64}


@pytest.fixture(scope="module")
def digits() -> Splits:
    return Digits().load(SplitOptions(), seed=0)


def _subset(splits: Splits, n: int) -> Splits:
    return Splits(
        train=tuple(t[:n] for t in splits.train),
        val=tuple(t[: n // 2] for t in splits.val),
        test=tuple(t[: n // 2] for t in splits.test),
        spec=splits.spec,
    )


def _train(model: DINOModel, splits: Splits, params: dict, seed: int = 0) -> list:
    reports: list[tuple[int, dict[str, float]]] = []
    final = DINO().train(model, splits, params, lambda e, m: reports.append((e, m)), seed)
    assert final == reports[-1][1]
    return reports


# ------------------------------------------------------------------ model and plugin


def test_registered_and_builds_an_embedder(digits: Splits) -> None:
    arch = get_registry().get("architectures", "dino")
    assert isinstance(arch, DINO) and arch.task == "self_supervised"
    model = arch.build(SMALL, digits.spec)
    x = torch.rand(3, 1, 8, 8)
    assert model(x).shape == (3, 64) and model.forward_features(x).shape == (3, 64)
    assert model.embed_dim == 64
    tokens = model.backbone.forward_tokens(torch.rand(3, 1, 4, 4))  # a local crop: 2x2 patches
    assert tokens.shape == (3, 5, 64)
    logits = model.head(model(x))
    assert logits.shape == (3, 256) and logits.abs().max() <= 1 + 1e-5  # cosine similarities
    # a checkpoint of the model loads into a fresh build (what export does)
    fresh = arch.build(SMALL, digits.spec)
    fresh.load_state_dict(model.state_dict())


def test_check_params() -> None:
    arch = DINO()
    assert arch.check_params(SMALL) is None
    assert "prototypes" in arch.check_params(SMALL | {"prototypes": 0})
    reason = arch.check_params(SMALL | {"patch_size": 3}, Digits.spec)
    assert reason is not None and reason.startswith("dino:") and "8x8" in reason
    with pytest.raises(ValueError, match="divisible"):
        arch.build(SMALL | {"width": 30}, Digits.spec)


def test_space_and_config_validation(write_config) -> None:
    spaces: list[NamedSpace] = []
    search_spaces.register_search_spaces(spaces.append)
    (named,) = [s for s in spaces if s.name == "dino"]
    space = named.load()
    assert set(space.dims) <= set(TRAINER_PARAMS) | set(DINO.trainer_params) | set(DINO.defaults)
    path = write_config(
        """
        [study]
        name = "dino"
        metric = "val_knn_accuracy"
        [architecture]
        name = "dino"
        [dataset]
        name = "digits"
        [space]
        epochs = 2
        distill_from = "/tmp/teacher.pt"
        ibot_weight = 0.5
        """
    )
    resolved = load_config(path, get_registry())
    assert resolved.direction == "maximize" and resolved.architecture.name == "dino"
    for metric, direction in (("val_linear_accuracy", "maximize"), ("train_loss", "minimize")):
        path.write_text(path.read_text().replace(resolved.config.study.metric, metric))
        resolved = load_config(path, get_registry())
        assert resolved.direction == direction


class TestDINOContract(ArchitectureContract):
    """The space's corners build and export (the embedding); see test_forward_backward."""

    @pytest.fixture
    def architecture(self) -> Architecture:
        return DINO()

    @pytest.fixture
    def data_spec(self) -> DataSpec:
        return DataSpec("self_supervised", "image", (1, 8, 8), 10)

    def test_forward_backward(self, model: torch.nn.Module, example: torch.Tensor) -> None:
        # forward is the embedding: the DINO head and the iBOT mask token only train
        model.train()
        out = model(example)
        assert out.shape == (self.batch, model.embed_dim)
        (out.square().mean() + model.head(out).square().mean()).backward()
        unused = {"backbone.mask_token"}
        for name, param in model.named_parameters():
            assert (param.grad is not None) != (name in unused), name
            assert name in unused or torch.isfinite(param.grad).all()


# ------------------------------------------------------------------ crops and masks


def test_multi_crop_shapes_ranges_and_determinism() -> None:
    x = torch.rand(5, 1, 8, 8) * 0.8 + 0.1
    globals_, locals_ = multi_crop(x, 3, (4, 4), torch.Generator().manual_seed(0), jitter=0.2)
    assert [g.shape for g in globals_] == [(5, 1, 8, 8)] * 2
    assert [c.shape for c in locals_] == [(5, 1, 4, 4)] * 3
    for crop in globals_ + locals_:
        assert crop.min() >= x.min() - 1e-6 and crop.max() <= x.max() + 1e-6
    assert not torch.equal(globals_[0], globals_[1])
    again, _ = multi_crop(x, 3, (4, 4), torch.Generator().manual_seed(0), jitter=0.2)
    assert torch.equal(again[0], globals_[0])


def test_full_crop_is_identity_and_flip_mirrors(monkeypatch: pytest.MonkeyPatch) -> None:
    import autoplat.plugins.architectures.dino as dino

    monkeypatch.setattr(dino, "ASPECT_RATIO", (1.0, 1.0))
    x = torch.rand(4, 2, 8, 8)
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(random_resized_crop(x, (8, 8), (1.0, 1.0), gen, 0.0), x)
    flipped = random_resized_crop(x, (8, 8), (1.0, 1.0), gen, flip_prob=1.0)
    torch.testing.assert_close(flipped, x.flip(-1))
    half = random_resized_crop(x, (4, 4), (1.0, 1.0), gen, 0.0)
    torch.testing.assert_close(half, F.avg_pool2d(x, 2))  # bilinear at half size averages


def test_random_masks() -> None:
    masks = random_masks(400, 16, torch.Generator().manual_seed(0))
    assert masks.shape == (400, 16) and masks.dtype == torch.bool
    counts = masks.sum(dim=1)
    masked = counts > 0
    assert 0.4 < masked.float().mean() < 0.6  # MASK_PROBABILITY of the images
    assert counts[masked].min() >= 2 and counts[masked].max() <= 8  # 0.1-0.5 of 16 patches


# ------------------------------------------------------------------ losses by hand


def test_centering_and_sharpening_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    center = torch.tensor([[0.5, 1.0, 0.5]])
    probs = teacher_probs(logits, center, temp=0.5)
    for row in range(2):
        z = [(logits[row, j].item() - center[0, j].item()) / 0.5 for j in range(3)]
        expected = [math.exp(v) / sum(math.exp(w) for w in z) for w in [0] for v in z]
        torch.testing.assert_close(probs[row], torch.tensor(expected))
    # a lower temperature sharpens: the entropy falls
    sharp = teacher_probs(logits, center, temp=0.1)
    entropy = lambda p: -(p * p.log()).sum(dim=-1)  # noqa: E731
    assert (entropy(sharp) < entropy(probs)).all()
    new = updated_center(center, logits, momentum=0.9)
    torch.testing.assert_close(
        new, torch.tensor([[0.9 * 0.5 + 0.1 * 0.5, 0.9 + 0.15, 0.45 + 0.15]])
    )


def test_dino_loss_by_hand() -> None:
    torch.manual_seed(0)
    students = [torch.randn(2, 4) for _ in range(3)]  # 2 global views, then 1 local
    teachers = [torch.softmax(torch.randn(2, 4), dim=-1) for _ in range(2)]
    total, terms = 0.0, 0
    for iq in range(2):
        for v in range(3):
            if v == iq:
                continue
            for b in range(2):
                s = [students[v][b, j].item() / 0.1 for j in range(4)]
                log_z = math.log(sum(math.exp(e) for e in s))
                ce = -sum(teachers[iq][b, j].item() * (s[j] - log_z) for j in range(4))
                total += ce / 2
            terms += 1
    assert terms == 4
    torch.testing.assert_close(dino_loss(students, teachers).item(), total / terms)


def test_ema_and_schedules() -> None:
    student, teacher = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, momentum=0.9)
    for t, t0, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * s)
    assert teacher_momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert teacher_momentum_at(50, 100, 0.99) == pytest.approx(0.995)
    assert teacher_momentum_at(100, 100, 0.99) == pytest.approx(1.0)
    assert teacher_temp_at(0, 10, 0.04, 0.07) == pytest.approx(0.04)
    assert teacher_temp_at(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert teacher_temp_at(10, 10, 0.04, 0.07) == teacher_temp_at(99, 10, 0.04, 0.07) == 0.07


def test_koleo_by_hand() -> None:
    # (1,0), (0,1), (-1,0): every nearest neighbour is sqrt(2) away
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert koleo_loss(points).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)
    assert koleo_loss(points * 3).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)
    # (1,0), (0.6,0.8), (0,1): nearest distances sqrt(0.8), sqrt(0.4), sqrt(0.4)
    points = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    expected = -(math.log(math.sqrt(0.8)) + 2 * math.log(math.sqrt(0.4))) / 3
    assert koleo_loss(points).item() == pytest.approx(expected, abs=1e-6)


def test_ibot_loss_by_hand_and_differentiable() -> None:
    torch.manual_seed(0)
    student = torch.randn(2, 3, 4, requires_grad=True)
    teacher = torch.softmax(torch.randn(2, 3, 4), dim=-1)
    masks = torch.tensor([[True, False, True], [False, False, False]])
    loss = ibot_loss(student, teacher, masks)
    ce = -(teacher * F.log_softmax(student / 0.1, dim=-1)).sum(-1)
    torch.testing.assert_close(loss, (ce[0, 0] + ce[0, 2]) / 2)  # one image has masks
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad[0, 0].abs().sum() > 0
    assert student.grad[0, 1].abs().sum() == 0 and student.grad[1].abs().sum() == 0
    assert ibot_loss(student, teacher, torch.zeros(2, 3, dtype=torch.bool)).item() == 0


def test_knn_accuracy_on_separable_features() -> None:
    train = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    labels = torch.tensor([0] * 5 + [1] * 5)
    query = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]])
    assert knn_accuracy(train, labels, query, torch.tensor([0, 1, 1]), k=3) == 1.0
    assert knn_accuracy(train, labels, query, torch.tensor([1, 1, 1]), k=3) == pytest.approx(2 / 3)


# ------------------------------------------------------------------ the trainer


@pytest.mark.slow  # ~5 s of training
def test_dino_learns_features_on_digits(digits: Splits) -> None:
    torch.manual_seed(0)
    model = DINO().build(SMALL, digits.spec)
    random_init = evaluate_features(model.backbone, digits, torch.device("cpu"))
    reports = _train(model, digits, {"epochs": 3, "lr": 3e-3, "batch_size": 32, "warmup_epochs": 1})
    assert [e for e, _ in reports] == [1, 2, 3]
    first, last = reports[0][1], reports[-1][1]
    keys = {"train_loss", "val_knn_accuracy", "val_linear_accuracy", "val_accuracy"}
    assert set(first) == keys
    assert set(last) == keys | {"test_knn_accuracy", "test_linear_accuracy", "test_accuracy"}
    assert last["train_loss"] < first["train_loss"] - 0.3
    assert last["val_knn_accuracy"] > random_init["val_knn_accuracy"] + 0.1
    assert last["val_knn_accuracy"] > 0.7 and last["test_knn_accuracy"] > 0.65  # chance: 0.1
    assert last["val_linear_accuracy"] > 0.85
    # the model now holds the EMA teacher's weights, the features measured
    measured = evaluate_features(model.backbone, digits, torch.device("cpu"), test=True)
    assert measured["test_knn_accuracy"] == pytest.approx(last["test_knn_accuracy"])


def test_ibot_and_koleo_train_and_are_reproducible(digits: Splits) -> None:
    small = _subset(digits, 256)
    params = {"epochs": 2, "batch_size": 64, "ibot_weight": 1.0, "koleo_weight": 0.1}

    def run(seed: int) -> list:
        torch.manual_seed(0)
        model = DINO().build(TINY | {"patch_size": 2}, small.spec)
        return _train(model, small, params, seed)

    first = run(seed=3)
    assert all(math.isfinite(v) for _, m in first for v in m.values())
    assert run(seed=3) == first
    assert run(seed=4) != first


def test_nan_fails_the_trial(digits: Splits) -> None:
    model = DINO().build(TINY, digits.spec)
    with torch.no_grad():
        model.backbone.patch_embed.weight.fill_(float("nan"))
    with pytest.raises(TrialFailed, match="NaN at epoch 1"):
        _train(model, _subset(digits, 128), {"epochs": 2})
    with pytest.raises(TrialFailed, match="local_crops"):
        _train(DINO().build(TINY, digits.spec), digits, {"local_crops": -1})


def test_distillation_from_a_saved_teacher(digits: Splits, tmp_path) -> None:
    small = _subset(digits, 256)
    torch.manual_seed(0)
    big = {"depth": 2, "width": 64, "heads": 4, "patch_size": 4, "prototypes": 64}
    teacher = DINO().build(big, small.spec)
    _train(teacher, small, {"epochs": 1, "batch_size": 64})
    path = tmp_path / "teacher.pt"
    save_checkpoint(teacher, path)

    torch.manual_seed(1)
    student = DINO().build(TINY, small.spec)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    params = {"epochs": 2, "batch_size": 64, "distill_from": str(path), "teacher_heads": 4}
    reports = _train(student, small, params | {"teacher_width": 64, "teacher_depth": 2})
    last = reports[-1][1]
    assert {"val_knn_accuracy", "val_linear_accuracy", "test_knn_accuracy"} <= set(last)
    assert all(math.isfinite(v) for v in last.values())
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.blocks") for k in changed)
    # the teacher file is left as it was: frozen
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in teacher.state_dict().items())

    def fails(match: str, **extra) -> None:
        with pytest.raises(TrialFailed, match=match):
            _train(DINO().build(TINY, small.spec), small, params | {"epochs": 1} | extra)

    fails("teacher_width is 128", teacher_width=128)
    fails("not a file", distill_from=str(tmp_path / "missing.pt"))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    fails("not a dino checkpoint", distill_from=str(tmp_path / "other.pt"))
    with pytest.raises(TrialFailed, match="prototypes = 64"):
        student = DINO().build(TINY | {"prototypes": 32}, small.spec)
        _train(student, small, params)
