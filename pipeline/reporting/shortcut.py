"""The shortcut verdict: does the simple-feature baseline come close to the best backbone?

"Close" is either of two rules, and the verdict names the one (or both) that fired:
- interval: the upper bound of the baseline's 95% group AUC interval reaches the best
  backbone's group AUC (the data cannot say the network does better than the baseline);
- paired test: the paired test of the best backbone against the baseline on the same test
  groups, Holm-adjusted with the rest of the paired table, finds no difference at 0.05.
The best backbone is the one with the highest group AUC (then crop AUC). A verdict of
"suspected" says that brightness, size or texture alone may explain the result; it does
not say the network learnt nothing else.
"""

from __future__ import annotations

import pandas as pd

from pipeline.reporting.labels import BASELINE_LABEL
from pipeline.stats import ALPHA

RULE_TEXT = ("the baseline's 95% group AUC interval reaches the best backbone's group AUC, "
             f"or the paired test (Holm) finds no group-level difference at {ALPHA}")


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def shortcut_verdict(table: pd.DataFrame, paired: pd.DataFrame, evidence: dict) -> dict:
    """{shortcut_suspected, rules_fired, the numbers behind it, the strongest features}.

    `table` and `paired` are compare's frames (classifiers by their labels), `evidence` the
    baseline's per-feature figures (metrics.json `features`)."""
    verdict = {"rule": RULE_TEXT, "checked": False, "shortcut_suspected": False,
               "rules_fired": "none"}
    base = table[table["backbone"] == BASELINE_LABEL]
    backbones = table[table["backbone"] != BASELINE_LABEL]
    if base.empty or backbones.empty:
        return verdict | {"why_not_checked": "no baseline or no backbone in the comparison"}
    base = base.iloc[0]
    best = backbones.sort_values(["group_auc", "crop_auc"], ascending=False).iloc[0]
    upper = _number(base["group_auc_ci_high"])
    interval_rule = upper is not None and upper >= float(best["group_auc"])
    p_holm = None
    for row in paired.to_dict("records"):
        if {row["backbone_a"], row["backbone_b"]} == {best["backbone"], BASELINE_LABEL}:
            p_holm = _number(row["group_p_holm"])
    paired_rule = p_holm is not None and p_holm >= ALPHA
    fired = [name for name, hit in (("interval", interval_rule), ("paired test", paired_rule))
             if hit]
    ranked = sorted(evidence, key=lambda n: -(evidence[n].get("test_crop_auc_alone") or 0))
    return verdict | {
        "checked": upper is not None or p_holm is not None,
        "shortcut_suspected": bool(fired), "rules_fired": " and ".join(fired) or "none",
        "best_backbone": str(best["backbone"]), "best_group_auc": float(best["group_auc"]),
        "best_crop_auc": float(best["crop_auc"]),
        "baseline_group_auc": _number(base["group_auc"]),
        "baseline_group_auc_ci_low": _number(base["group_auc_ci_low"]),
        "baseline_group_auc_ci_high": upper,
        "baseline_crop_auc": _number(base["crop_auc"]),
        "paired_group_p_holm": p_holm,
        "strongest_features": ", ".join(
            f"{name} (crop AUC alone {evidence[name]['test_crop_auc_alone']:.3f}, higher in "
            f"{evidence[name]['higher_in']})" for name in ranked[:3]
            if evidence[name].get("test_crop_auc_alone") is not None)}


def verdict_text(verdict: dict) -> str:
    """The verdict in one paragraph, with the word 'shortcut' and the features named."""
    if not verdict.get("checked"):
        return ("Shortcut check: not run (" + verdict.get("why_not_checked", "the baseline's "
                "group-level figures are not estimable") + ").")
    numbers = (f"baseline group AUC {verdict['baseline_group_auc']:.3f} (95% CI up to "
               f"{verdict['baseline_group_auc_ci_high'] or float('nan'):.3f}) against "
               f"{verdict['best_backbone']} {verdict['best_group_auc']:.3f}; paired Holm p "
               + ("n/a" if verdict["paired_group_p_holm"] is None
                  else f"{verdict['paired_group_p_holm']:.3g}"))
    if verdict["shortcut_suspected"]:
        return (f"Shortcut suspected ({verdict['rules_fired']} rule): a logistic regression on "
                f"five simple per-crop features comes close to the best backbone ({numbers}). "
                f"The signal is carried by {verdict['strongest_features']}. Brightness, size "
                "or texture differences between the classes (a microscope, an imaging "
                "session, a cell line) may explain the result as well as TDP-43 pathology "
                "does; image both classes alike, or show the classes differ where these "
                "features do not.")
    return (f"No shortcut found: the simple-feature baseline stays clearly below the best "
            f"backbone ({numbers}). Strongest single features: "
            f"{verdict['strongest_features'] or 'none'}.")
