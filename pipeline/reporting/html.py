"""One self-contained HTML report of a pipeline run (images embedded, no external files).

Dataset summary, SR quality against bicubic, training curves, the backbone comparison with
paired tests, ROC curves, confusion matrices, Grad-CAM grids and cross-validation. With
experiments it also shows what is made across them: the SR ablation (reports/ablation,
written by `python -m pipeline.tools.ablation`) and the lr x batch_size grid from `dvc exp
show`; that page goes to a path of its own (pipeline.tools.experiments_page), never the
DVC-tracked reports/report.html, whose stage reads only its declared deps.

The markup is in templates/ (jinja2, autoescaped): report.html.j2 is the page,
sections.html.j2 one macro per section; this module computes what they show.
"""

from __future__ import annotations

import base64
import io
from functools import cache
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from models.backbones import BACKBONES
from pipeline.cli import PipelineError
from pipeline.io import read_crop_table, read_json
from pipeline.reporting.labels import classifier_label

TEMPLATES = Path(__file__).with_name("templates")


@cache
def _environment():
    import jinja2

    # StrictUndefined: a value the code forgot to pass fails the report, not a blank cell
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _section(macro: str, *args) -> Markup:
    """One macro of templates/sections.html.j2, rendered with `args` (escaped unless
    markup)."""
    return getattr(_environment().get_template("sections.html.j2").module, macro)(*args)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _png_file(path: Path) -> str | None:
    """A PNG file as a data URI, None when it is missing."""
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _table(frame: pd.DataFrame, digits: int = 3) -> Markup:
    """A DataFrame as an HTML table; pandas escapes every cell."""
    return Markup(frame.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}",
                                border=0, escape=True, na_rep=""))


def dataset_section(reports: Path) -> str:
    ingest, split = read_json(reports / "ingest" / "metrics.json"), read_json(reports / "split" /
                                                                        "metrics.json")
    classes = sorted({k.split("_", 2)[2] for k in split if k.startswith("train_crops_")})
    rows = []
    for class_name in classes:
        row = {"Class": class_name}
        for part in ("train", "val", "test"):
            row[f"{part.capitalize()} crops"] = split.get(f"{part}_crops_{class_name}")
            row[f"{part.capitalize()} groups"] = split.get(f"{part}_groups_{class_name}")
        rows.append(row)
    return _section("dataset", ingest, split, _table(pd.DataFrame(rows)))


def sr_section(reports: Path, classifier_note: str = "") -> str:
    """SR against bicubic, then `classifier_note` (what SR did for the classifier, or that
    this run did not test it)."""
    metrics = read_json(reports / "sr" / "metrics.json")
    if not metrics:
        return ""
    exported = metrics.get("generator")
    rows = [{"model": "bicubic", "PSNR (dB)": metrics["psnr_bicubic"],
             "SSIM": metrics["ssim_bicubic"], "feeds the classifier": ""},
            {"model": "SR phase 1 (L1; generator psnr)", "PSNR (dB)": metrics["psnr_phase1"],
             "SSIM": metrics["ssim_phase1"],
             "feeds the classifier": "yes" if exported == "psnr" else ""}]
    if metrics.get("psnr_gan") is not None:  # no GAN phase with sr.iters_gan: 0
        rows.append({"model": "SR GAN phase (EMA; generator gan)",
                     "PSNR (dB)": metrics["psnr_gan"], "SSIM": metrics["ssim_gan"],
                     "feeds the classifier": "yes" if exported == "gan" else ""})
    held_out = None
    if metrics.get("psnr_test") is not None:
        held_out = _table(pd.DataFrame([
            {"model": "bicubic", "PSNR (dB)": metrics["psnr_bicubic_test"],
             "SSIM": metrics["ssim_bicubic_test"]},
            {"model": f"SR, generator {exported}", "PSNR (dB)": metrics["psnr_test"],
             "SSIM": metrics["ssim_test"]}]), 3)
    return _section("sr", Markup(sr_gain_banner(metrics)), _table(pd.DataFrame(rows), 3),
                    held_out, metrics, _png_file(reports / "sr" / "samples.png"),
                    Markup(classifier_note))


# The inputs the ablation trains the classifier on (classifier.input).
ABLATION_INPUTS = ("raw", "bicubic", "sr", "hr")


def sr_classifier_note(input_kind: str, acquire_downsample: int, ablation_below: bool) -> str:
    """One sentence for the SR section: the ablation below answers what SR does for the
    classifier, or the commands (README, *Does SR help?*) that would."""
    others = [kind for kind in ABLATION_INPUTS
              if kind != input_kind and (kind != "hr" or acquire_downsample > 0)]
    return _section("sr_classifier_note", ablation_below, input_kind, others,
                    acquire_downsample <= 0)


def sr_gain_banner(metrics: dict) -> str:
    """A banner over the SR section when SR does no better than bicubic ('' otherwise)."""
    gain = metrics.get("sr_gain_db")
    if gain is None:
        return ""
    where = "held-out test" if metrics.get("sr_gain_pairs") == "test" else "validation"
    return _section("sr_gain_banner", gain, where, bool(metrics.get("sr_better_than_bicubic")))


def curves_section(reports: Path, backbones: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for backbone in backbones:
        path = reports / "train" / backbone / "curves.csv"
        if not path.is_file():
            continue
        curves = pd.read_csv(path)
        line, = axes[0].plot(curves["epoch"], curves["train_loss"], label=f"{backbone} train")
        axes[0].plot(curves["epoch"], curves["val_loss"], "--", color=line.get_color(),
                     label=f"{backbone} validation")
        axes[1].plot(curves["epoch"], curves["val_auc"], "--", color=line.get_color())
    from matplotlib.ticker import MaxNLocator

    axes[0].set(title="loss", xlabel="epoch", ylabel="cross-entropy loss")
    axes[1].set(title="validation AUC", xlabel="epoch", ylabel="AUC (crops)", ylim=(0, 1.02))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.tight_layout()
    # One legend for both panels, right of them, where it covers no line: a colour per
    # backbone, solid training, dashed validation.
    if axes[0].lines:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="center left",
                   bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return _section("figure", "Training curves (first seed)", "curves", _png(fig))


def confusion_section(reports: Path, split: Path, backbones: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.stats import decide, group_level

    names = ["negative", "positive"]
    if split.is_file():
        from pipeline.classify.explain import class_names_from

        names = list(class_names_from(read_crop_table(split)))
    fig, axes = plt.subplots(2, len(backbones), figsize=(2.8 * len(backbones), 5.4),
                             squeeze=False)
    for column, backbone in enumerate(backbones):
        path = reports / "eval" / backbone / "predictions.csv"
        if not path.is_file():
            continue
        crops = read_crop_table(path)  # `predicted` is at the crop threshold
        thresholds = read_json(path.parent / "metrics.json")["threshold"]
        groups = group_level(crops)
        groups["predicted"] = decide(groups["prob"], thresholds["group"])
        cuts = {"crops": thresholds["crop"], "groups": thresholds["group"]}
        for row, (level, frame) in enumerate((("crops", crops), ("groups", groups))):
            matrix = pd.crosstab(frame["label"], frame["predicted"]).reindex(
                index=[0, 1], columns=[0, 1], fill_value=0).to_numpy()
            ax = axes[row][column]
            ax.imshow(matrix, cmap="Blues")
            for (i, j), value in pd.DataFrame(matrix).stack().items():
                ax.text(j, i, str(value), ha="center", va="center")
            ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=names, yticklabels=names,
                   xlabel="predicted", ylabel="true",
                   title=f"{backbone}\n{level} at {cuts[level]:.3g}")
    fig.tight_layout()
    return _section("figure", "Confusion matrices (test, at the thresholds chosen on "
                    "validation)", "confusion", _png(fig))


def shortcut_banner(reports: Path) -> str:
    """The shortcut verdict at the top of the report when the baseline comes close to the
    best backbone ('' otherwise: the section below still gives the figures)."""
    from pipeline.reporting.shortcut import verdict_text

    verdict = read_json(reports / "compare" / "shortcut.json")
    if not verdict.get("shortcut_suspected"):
        return ""
    return _section("shortcut_banner", verdict_text(verdict))


def shortcut_section(reports: Path) -> str:
    """Could something simpler explain the result: the baseline's verdict, which features
    carry its signal, brightness per group, and the acquisition fields per class."""
    from pipeline.reporting.shortcut import RULE_TEXT, verdict_text

    verdict = read_json(reports / "compare" / "shortcut.json")
    baseline = read_json(reports / "eval" / "baseline" / "metrics.json")
    if not verdict and not baseline:
        return ""
    features = baseline.get("features", {})
    rows = [{"Feature": name, "What it measures": figures["what"],
             "Coefficient (standardised)": figures["coefficient"],
             "Test crop AUC alone": figures["test_crop_auc_alone"],
             "Higher in": figures["higher_in"]}
            for name, figures in sorted(features.items(),
                                        key=lambda kv: -(kv[1]["test_crop_auc_alone"] or 0))]
    return _section("shortcut", verdict_text(verdict), baseline.get("chosen_c"), RULE_TEXT,
                    _table(pd.DataFrame(rows)) if rows else None,
                    brightness_figure(reports / "baseline" / "groups.csv"),
                    Markup(acquisition_table(read_json(reports / "ingest" / "metrics.json"))))


def brightness_figure(path: Path) -> str | None:
    """Per-group mean intensity by class, as a data URI (None without the file): shifts
    between imaging sessions (the classic batch effect) show as classes apart on brightness
    alone."""
    if not path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = read_crop_table(path)
    classes = sorted(groups["class_name"].unique())
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    rng = np.random.default_rng(0)  # jitter only, so points do not hide one another
    for split, marker in (("train", "o"), ("val", "s"), ("test", "^")):
        part = groups[groups["split"] == split]
        x = part["class_name"].map(classes.index) + rng.uniform(-0.15, 0.15, len(part))
        ax.scatter(x, part["mean_intensity"], marker=marker, s=22, alpha=0.75, label=split)
    ax.set(xticks=range(len(classes)), xticklabels=classes,
           ylabel="group mean intensity\n(mean of its crops, 0-1)",
           title="Brightness per group (one point per patient sample)")
    ax.legend(title="split", fontsize=7, title_fontsize=7, loc="center left",
              bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return _png(fig)


def acquisition_table(ingest: dict) -> str:
    """What the files of each class say of their acquisition (ingest's comparison)."""
    from pipeline.data.acquisition import ACQUISITION_FIELDS

    by_field = ingest.get("acquisition") or {}
    if not by_field:
        return ""
    rows = [{"Field": ACQUISITION_FIELDS.get(name, name), **per_class}
            for name, per_class in by_field.items()]
    return _section("acquisition", ingest.get("acquisition_confounds", "none"),
                    _table(pd.DataFrame(rows)))


def comparison_section(reports: Path) -> str:
    from pipeline.classify.scoring import COLLAPSE_RULE
    from pipeline.reporting.compare import readable_costs, readable_paired, readable_table

    rules = figures = costs = paired_table = None
    table = reports / "compare" / "table.csv"
    if table.is_file():
        frame = pd.read_csv(table, keep_default_na=False, na_values=[""])
        frame["caveat"] = frame["caveat"].astype(object).fillna("")
        rules = ", ".join(sorted(set(frame["threshold_rule"].astype(str))))
        figures = _table(readable_table(frame.replace({float("nan"): None})))
        costs = _table(readable_costs(frame))
    paired = reports / "compare" / "paired.csv"
    if paired.is_file() and paired.stat().st_size > 1:
        rows = pd.read_csv(paired)
        if not rows.empty:
            paired_table = _table(readable_paired(rows))
    return _section("comparison", rules, COLLAPSE_RULE, figures, costs, paired_table,
                    _png_file(reports / "compare" / "roc_overlay.png"))


def gradcam_section(reports: Path, backbones: list[str]) -> str:
    layers = [(b, BACKBONES[b].cam_layer, BACKBONES[b].cam_layer_is) for b in backbones]
    images = [(_png_file(reports / "eval" / b / "gradcam.png"), f"Grad-CAM {b}")
              for b in backbones]
    return _section("gradcam", layers, images)


def crossval_section(reports: Path) -> str:
    summary = reports / "crossval" / "summary.csv"
    frame = pd.read_csv(summary) if summary.is_file() else pd.DataFrame()
    if frame.empty:  # split.folds: 0
        return ""
    return _section("crossval", _table(frame))


def ablation_section(reports: Path) -> str:
    """The SR ablation written by `python -m pipeline.tools.ablation`, one table per dataset."""
    from pipeline.reporting.ablation import readable_cells, readable_pairs

    path, paired_path = reports / "ablation" / "table.csv", reports / "ablation" / "paired.csv"
    if not path.is_file():
        return ""
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    paired = (pd.read_csv(paired_path, keep_default_na=False, na_values=[""])
              if paired_path.is_file() and paired_path.stat().st_size > 1 else pd.DataFrame())
    datasets = []
    for dataset, part in table.groupby("dataset", sort=True):
        rows = paired[paired["dataset"] == dataset] if not paired.empty else paired
        datasets.append((str(dataset), _table(readable_cells(part)),
                         _table(readable_pairs(rows)) if not rows.empty else None))
    return _section("ablation", datasets)


def experiments_section() -> str:
    from pipeline.reporting.experiments import (
        describe_left_out,
        experiments_from_dvc,
        format_lr,
        grid_table,
        with_interval,
        with_spread,
    )

    try:
        collected = experiments_from_dvc()
    except PipelineError as exc:
        return _section("experiments_unavailable", str(exc))
    frame, duplicates = grid_table(collected.finished)
    if frame.empty or frame[["lr", "batch_size"]].drop_duplicates().shape[0] < 2:
        return ""
    shown = pd.DataFrame({
        "Data": frame["dataset"], "Backbone": frame["backbone"].map(classifier_label),
        "Input": frame["input_label"],
        "lr": frame["lr"].map(format_lr), "Batch": frame["batch_size"],  # 0.0001, not 0.000
        "Group AUC [95% CI]": frame.apply(lambda r: with_interval(r, "group_auc"), axis=1),
        "Crop AUC [95% CI]": frame.apply(lambda r: with_interval(r, "crop_auc"), axis=1),
        "Group AUC over seeds": frame.apply(lambda r: with_spread(r, "group_auc"), axis=1),
        "Experiment": frame["experiment"]})
    return _section("grid", describe_left_out(collected.left_out), duplicates, _table(shown))


def facts_table(facts: list[tuple[str, str]]) -> str:
    """The header's table of what ran (provenance.run_facts); '' without facts."""
    return _section("facts_table", list(facts))


def build_report(reports: Path, split: Path, backbones: list[str],
                 with_experiments: bool, facts: list[tuple[str, str]] = (),
                 input_kind: str = "sr", acquire_downsample: int = 0) -> str:
    """The page; `facts` head it (what ran), `input_kind` and `acquire_downsample` (the
    run's classifier.input and data.acquire_downsample) word the SR section's last line."""
    ablation_below = with_experiments and (reports / "ablation" / "table.csv").is_file()
    sr_note = sr_classifier_note(input_kind, acquire_downsample, ablation_below)
    sections = [dataset_section(reports), sr_section(reports, sr_note),
                curves_section(reports, backbones), comparison_section(reports),
                shortcut_section(reports),
                confusion_section(reports, split, backbones), gradcam_section(reports, backbones),
                crossval_section(reports)]
    if with_experiments:
        sections += [ablation_section(reports), experiments_section()]
    return _environment().get_template("report.html.j2").render(
        facts=Markup(facts_table(facts)), shortcut_banner=Markup(shortcut_banner(reports)),
        sections=[Markup(section) for section in sections if section])


def write_report(out: Path, reports: Path, split: Path, params_path: Path,
                 with_experiments: bool) -> None:
    """build_report for the params of `params_path`, headed by what ran, written
    atomically to `out`."""
    import yaml

    from pipeline.config import load_params
    from pipeline.io import write_text_atomic
    from pipeline.reporting.provenance import run_facts

    params = load_params(params_path)
    facts = run_facts(reports, params, yaml.safe_load(params_path.read_text()))
    write_text_atomic(out, build_report(reports, split, params.classifier.backbones,
                                        with_experiments, facts, params.classifier.input,
                                        params.data.acquire_downsample))
