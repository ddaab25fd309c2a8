"""A search's same-run baseline (``[baseline]``): a scikit-learn model fitted once per study
on the study's own train split (inputs flattened), scored on its val and test splits, and
stored with the study, for a ``[baseline]`` row on its leaderboard.

Light at import: scikit-learn and numpy are imported when a baseline is fitted.
"""

from __future__ import annotations

import time
from typing import Any

from autoplat.core.errors import ConfigError

MODELS = ("logistic-regression", "svc", "random-forest", "most-frequent")
OPTIONS = {  # which [baseline] options each model takes
    "logistic-regression": ("C", "max_iter"),
    "svc": ("C",),
    "random-forest": ("n_estimators",),
    "most-frequent": (),
}


def make_model(section: Any, seed: int) -> Any:
    """The scikit-learn estimator of a ``[baseline]`` section (``config.BaselineSection``)."""
    if section.model == "logistic-regression":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=section.C, max_iter=section.max_iter)
    if section.model == "svc":
        from sklearn.svm import SVC

        return SVC(C=section.C)
    if section.model == "random-forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=section.n_estimators, random_state=seed)
    from sklearn.dummy import DummyClassifier

    return DummyClassifier(strategy="most_frequent")


def features(part: tuple[Any, ...]) -> tuple[Any, Any]:
    """(inputs flattened to one row per example, labels) of a split as numpy arrays."""
    inputs, labels = part
    return inputs.reshape(len(inputs), -1).float().numpy(), labels.numpy()


def fit_baseline(section: Any, splits: Any, seed: int, path: Any) -> dict[str, Any]:
    """Fit the baseline on ``splits.train``; its model, options, accuracy on the val and
    test splits and fit time. ConfigError when the splits are not (inputs, labels)."""
    if any(len(part) != 2 for part in (splits.train, splits.val, splits.test)):
        raise ConfigError(
            f"{path}: baseline: the dataset's splits are not (inputs, labels) pairs, which a "
            "scikit-learn baseline needs; remove [baseline]"
        )
    model = make_model(section, seed)
    start = time.perf_counter()
    model.fit(*features(splits.train))
    fit_s = time.perf_counter() - start
    return {
        "model": section.model,
        "options": {key: getattr(section, key) for key in OPTIONS[section.model]},
        "val_accuracy": float(model.score(*features(splits.val))),
        "test_accuracy": float(model.score(*features(splits.test))),
        "fit_s": round(fit_s, 3),
    }
