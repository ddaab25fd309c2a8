"""MoDE data experts (Ma et al., 2024): one contrastive model per data expert, ensembled.

A `platform curate` study with the ``mode`` scorer assigns each caption of a table to an
expert (a coarse cluster of caption embeddings). A search over ``[space]
dataset.expert = [0, 1, ...]`` on that table (dataset ``image-captions`` with
``experts`` = the curate scores file) trains one model per expert on its rows only.
``evaluate_experts`` then classifies the search's test images zero-shot with each
expert's best trial, alone and ensembled: the experts' logits summed with MoDE's task
weights (``task_weights`` of the mode scorer: by default the paper's rule, the class names,
embedded with the curation's embedder, against the fine-grained centers), and, for
comparison, with equal weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from autoplat.core.errors import AutoplatError
from autoplat.core.space import DATASET_PREFIX
from autoplat.core.store import Store, Study, Trial, TrialState

EXPERT_PARAM = DATASET_PREFIX + "expert"


class ExpertsError(AutoplatError):
    """The studies cannot be evaluated as data experts."""


@dataclass
class ExpertResult:
    expert: int
    trial: int
    weight: float  # MoDE's ensemble weight for the task
    accuracy: float  # zero-shot test accuracy of this expert alone


@dataclass
class ExpertsReport:
    study: str
    curation: str
    classes: list[str]
    test_images: int
    experts: list[ExpertResult]
    uniform_accuracy: float  # logits averaged with equal weights
    weighted_accuracy: float  # logits summed with MoDE's weights
    best_expert_accuracy: float  # the best single expert's accuracy
    weighting: str  # the rule the weights come from ("paper" or "coarse-softmax")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mode_trial(store: Store, curation: Study) -> Trial:
    if curation.kind != "curate":
        raise ExpertsError(
            f"study '{curation.name}' is a {curation.kind} study; --curation takes the "
            "`platform curate` study that ran [scorers.mode] on the table"
        )
    for trial in store.trials(curation.id):
        if trial.params_dict.get("scorer") == "mode" and trial.state == TrialState.COMPLETE:
            return trial
    raise ExpertsError(
        f"curation '{curation.name}' has no finished mode scorer; run `platform curate` "
        "with a [scorers.mode] section"
    )


def _task_weights(curation: Study, mode: Trial, classes: list[str]) -> np.ndarray:
    """MoDE's weights of the experts for these class names."""
    from autoplat.core.registry import get_registry
    from autoplat.plugins.scorers.embedding.mode import task_weights

    summary = mode.attrs_dict.get("summary", {})
    raw = json.loads(curation.config or "{}")
    section = dict(raw.get("embedder") or {})
    embedder_cls = get_registry().get("embedders", section.pop("name"))
    embedder = embedder_cls(embedder_cls.Options.model_validate(section), 0)
    template = mode.params_dict.get("class_template", "{}")
    names = embedder.embed([template.format(name) for name in classes])
    return task_weights(summary, names)


def _best_per_expert(store: Store, study: Study) -> dict[int, Trial]:
    best: dict[int, Trial] = {}
    better = (lambda a, b: a > b) if study.direction == "maximize" else (lambda a, b: a < b)
    for trial in store.trials(study.id):
        expert = trial.params_dict.get(EXPERT_PARAM)
        if trial.state != TrialState.COMPLETE or trial.value is None or expert is None:
            continue
        expert = int(expert)
        if expert not in best or better(trial.value, best[expert].value):
            best[expert] = trial
    return best


def _task_columns(classes: list[str], task: list[str] | None) -> list[int]:
    """Sorted indices of the task's classes among the data's."""
    if task is None:
        return list(range(len(classes)))
    unknown = [name for name in task if name not in classes]
    if unknown or len(set(task)) < 2:
        raise ExpertsError(
            f"--classes must name at least two of the data's classes ({', '.join(classes)}); "
            f"got {', '.join(task)}"
        )
    return sorted(classes.index(name) for name in set(task))


@torch.inference_mode()
def _zero_shot_logits(model: torch.nn.Module, test: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(labeled test images, classes) logits of a CLIP-style model on its test prompts."""
    images, labels, prompts = test[0], test[2], test[3]
    image_emb = model.encode_image(images[labels >= 0])
    return model.logit_scale() * image_emb @ model.encode_text(prompts).T


def evaluate_experts(
    store: Store, study_name: str, curation_name: str, task: list[str] | None = None
) -> ExpertsReport:
    """Zero-shot test accuracy of each expert's best trial, and of their ensembles.

    ``task``: the class names to classify among (default: every class of the data); the
    test images of other classes are left out and the ensemble weights are the task's.

    Raises:
        ExpertsError: A study is of the wrong kind, the search has no trials over
            ``dataset.expert`` or misses an expert, or its models are not CLIP-style.
    """
    from autoplat.core.export import load_trial_model

    curation = store.get_study(curation_name)
    mode = _mode_trial(store, curation)
    count = len(mode.attrs_dict.get("summary", {}).get("expert_centers", []))
    study = store.get_study(study_name)
    best = _best_per_expert(store, study)
    if not best:
        raise ExpertsError(
            f"study '{study_name}' has no completed trial with param '{EXPERT_PARAM}'; search "
            f"with [space] {EXPERT_PARAM} = [0, ..., {count - 1}] on the curated table"
        )
    missing = sorted(set(range(count)) - set(best))
    if missing:
        raise ExpertsError(
            f"study '{study_name}' has no completed trial for expert(s) "
            f"{', '.join(map(str, missing))} of the {count} in '{curation_name}'; the ensemble "
            f"needs one model per expert: add them to [space] {EXPERT_PARAM}"
        )
    logits: list[torch.Tensor] = []
    labels, classes, results = None, None, []
    for expert in range(count):
        loaded = load_trial_model(store, study_name, best[expert].number)
        test = loaded.test
        if not hasattr(loaded.model, "encode_image") or len(test) < 4:
            raise ExpertsError(
                f"trial {best[expert].number} of '{study_name}' is not a contrastive model "
                "with class prompts; experts need a CLIP-style architecture on labeled "
                "image-captions"
            )
        classes = list(loaded.spec.label_names)
        columns = _task_columns(classes, task)
        labels = test[2][test[2] >= 0]
        rows = torch.isin(labels, torch.tensor(columns))
        logits.append(_zero_shot_logits(loaded.model, test)[rows][:, columns].float())
        labels = torch.searchsorted(torch.tensor(columns), labels[rows])
        classes = [classes[c] for c in columns]
        accuracy = (logits[-1].argmax(1) == labels).float().mean().item()
        results.append(ExpertResult(expert, best[expert].number, 0.0, accuracy))
    assert labels is not None and classes is not None
    weights = _task_weights(curation, mode, classes)
    for result in results:
        result.weight = float(weights[result.expert])
    stacked = torch.stack(logits)  # (experts, images, classes)
    uniform = stacked.mean(0).argmax(1)
    weighted = (torch.as_tensor(weights, dtype=stacked.dtype)[:, None, None] * stacked).sum(0)
    return ExpertsReport(
        study=study_name,
        curation=curation_name,
        classes=classes,
        test_images=len(labels),
        experts=results,
        uniform_accuracy=(uniform == labels).float().mean().item(),
        weighted_accuracy=(weighted.argmax(1) == labels).float().mean().item(),
        best_expert_accuracy=max(result.accuracy for result in results),
        weighting=mode.attrs_dict.get("summary", {}).get("weighting", "coarse-softmax"),
    )
