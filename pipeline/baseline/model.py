"""The shortcut baseline: scikit-learn's logistic regression on the simple per-crop features,
trained on the backbones' training split, its regularisation and threshold chosen on the
same validation groups, and scored on the same test groups with the same statistics."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.baseline.features import FEATURES
from pipeline.cli import warn
from pipeline.stats import level_auc

FEATURE_COLUMNS = list(FEATURES)


def logistic_model(c: float, seed: int) -> Pipeline:
    """Standardised features into an L2 logistic regression; classes weighted to balance,
    as the backbones' training batches are."""
    return make_pipeline(StandardScaler(), LogisticRegression(
        C=c, class_weight="balanced", max_iter=10_000, random_state=seed))


def scored(rows: pd.DataFrame, model: Pipeline) -> pd.DataFrame:
    """crop_id, group, label, prob for `rows` under `model`."""
    prob = model.predict_proba(rows[FEATURE_COLUMNS].to_numpy())[:, 1]
    return rows[["crop_id", "group", "label"]].reset_index(drop=True).assign(
        prob=prob.astype(np.float64))


def validation_aucs(predictions: pd.DataFrame) -> tuple[float, float]:
    """(group AUC, crop AUC) of validation predictions; NaN where a level has one class."""
    return level_auc(predictions, "group"), level_auc(predictions, "crop")


def fit_baseline(train: pd.DataFrame, val: pd.DataFrame, c_grid: list[float], seed: int
                 ) -> tuple[Pipeline, dict]:
    """The model refit on `train` at the C whose validation group AUC is highest (then crop
    AUC, then the stronger regularisation), and {chosen_c, validation: {C: [group, crop]},
    train_seconds}."""
    start = time.perf_counter()
    X, y = train[FEATURE_COLUMNS].to_numpy(), train["label"].to_numpy()
    tried = {}
    for c in sorted(c_grid):
        model = logistic_model(c, seed).fit(X, y)
        tried[c] = validation_aucs(scored(val, model))
    usable = {c: aucs for c, aucs in tried.items() if not np.isnan(aucs[0])}
    if usable:
        # sorted ascending, so max's first maximum is the strongest regularisation
        chosen = max(usable, key=lambda c: (usable[c][0], np.nan_to_num(usable[c][1])))
    else:
        chosen = 1.0
        warn("baseline: the validation groups cannot rank (one class); C = 1 is used")
    model = logistic_model(chosen, seed).fit(X, y)
    return model, {"chosen_c": chosen,
                   "validation_auc_by_c": {str(c): {"group": g, "crop": k}
                                           for c, (g, k) in tried.items()},
                   "train_seconds": time.perf_counter() - start}


def feature_evidence(model: Pipeline, train: pd.DataFrame, test: pd.DataFrame,
                     class_names: tuple[str, str] = ("negative", "positive")) -> dict:
    """Per feature: its standardised logistic coefficient, and the test crop AUC of that
    feature alone, oriented by the training split (higher in the positive class there: the
    feature; lower: its negative), so that no test label chooses a direction; `higher_in`
    names the class (negative, positive) whose training crops have the higher mean."""
    coefficients = model[-1].coef_[0]
    evidence = {}
    for name, coefficient in zip(FEATURE_COLUMNS, coefficients):
        positive = train.loc[train["label"] == 1, name].mean()
        negative = train.loc[train["label"] == 0, name].mean()
        sign = 1.0 if positive >= negative else -1.0
        try:
            alone = float(roc_auc_score(test["label"], sign * test[name]))
        except ValueError:
            alone = None
        evidence[name] = {"coefficient": float(coefficient), "test_crop_auc_alone": alone,
                          "higher_in": class_names[1] if sign > 0 else class_names[0],
                          "what": FEATURES[name]}
    return evidence
