"""One self-contained HTML report of a pipeline run (images embedded, no external files).

Dataset summary, SR quality against bicubic, training curves, the backbone comparison with
paired tests, ROC curves, confusion matrices, Grad-CAM grids and cross-validation. With
experiments it also shows what is made across them: the SR ablation (reports/ablation,
written by `python -m pipeline.tools.ablation`) and the lr x batch_size grid from `dvc exp
show`; that page goes to a path of its own (pipeline.tools.experiments_page), never the
DVC-tracked reports/report.html, whose stage reads only its declared deps.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from models.backbones import BACKBONES
from pipeline.cli import PipelineError
from pipeline.io import read_crop_table, read_json
from pipeline.reporting.labels import classifier_label

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1150px;color:#222;line-height:1.4;padding:0 1em}
h1{border-bottom:2px solid #446;padding-bottom:.2em}h2{color:#335;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.8em}
@media print{body{max-width:none;margin:0;font-size:10pt}table{font-size:7.5pt}}
th,td{border:1px solid #ccd;padding:.25em .5em;text-align:right}th{background:#eef}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}
.note{color:#555;font-size:.9em}.wide{overflow-x:auto;max-width:100%}
.banner{background:#fff3cd;border:1px solid #e0b000;padding:.5em .8em}
.facts td,.facts th{text-align:left}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _img_file(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p class='note'>({html.escape(alt)}: not available)</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


# The unit of every split, interval and test, said once where the report first counts it.
GROUP_WORD = ("A <b>group</b> is one patient sample: all crop folders of one sample "
              "(<code>SD003_17_crops_r</code>, <code>SD003_17_crops2_r</code>).")


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    table = frame.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", border=0,
                          escape=True, na_rep="")
    return f"<div class='wide'>{table}</div>"


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
    text = (f"<p>{ingest.get('crops')} crops from {ingest.get('groups')} groups "
            f"(positive class: <b>{html.escape(str(ingest.get('positive_class')))}</b>); "
            f"{ingest.get('skipped_files', 0)} files skipped. {GROUP_WORD} Groups never cross "
            f"splits (groups in two splits: {split.get('groups_in_two_splits')}).</p>")
    return "<h2>Data</h2>" + text + _table(pd.DataFrame(rows))


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
    out = sr_gain_banner(metrics)
    out += ("<h3>Validation pairs (they chose the checkpoint and the generator)</h3>"
            + _table(pd.DataFrame(rows), 3))
    if metrics.get("psnr_test") is not None:
        held_out = pd.DataFrame([
            {"model": "bicubic", "PSNR (dB)": metrics["psnr_bicubic_test"],
             "SSIM": metrics["ssim_bicubic_test"]},
            {"model": f"SR, generator {exported}", "PSNR (dB)": metrics["psnr_test"],
             "SSIM": metrics["ssim_test"]}])
        out += ("<h3>Held-out test pairs (chose nothing: the figures to report)</h3>"
                + _table(held_out, 3))
    return ("<h2>Super-resolution against bicubic</h2>" + out +
            f"<p class='note'>{metrics['iterations']} iterations in "
            f"{metrics['train_seconds']:.0f} s in "
            f"{metrics.get('precision', 'a precision not recorded')}; perceptual loss: "
            f"{html.escape(str(metrics.get('perceptual_loss')))}.</p>" +
            _img_file(reports / "sr" / "samples.png", "SR samples") + classifier_note)


# The inputs the ablation trains the classifier on (classifier.input).
ABLATION_INPUTS = ("raw", "bicubic", "sr", "hr")


def sr_classifier_note(input_kind: str, acquire_downsample: int, ablation_below: bool) -> str:
    """One sentence for the SR section: the ablation below answers what SR does for the
    classifier, or the commands (README, *Does SR help?*) that would."""
    if ablation_below:
        return ("<p class='note'>What SR does for the classifier: the ablation below (the "
                "same backbones on each input, paired on the same test groups).</p>")
    others = [kind for kind in ABLATION_INPUTS
              if kind != input_kind and (kind != "hr" or acquire_downsample > 0)]
    hr_note = ("" if acquire_downsample > 0 else " (hr, the original crops, needs "
               "data.acquire_downsample &gt; 0; this run has 0)")
    return ("<p class='banner'><b>What SR does for the classifier was not tested in this "
            f"run</b>: it trained on <code>{html.escape(input_kind)}</code> only. "
            f"<code>dvc exp run --queue -S classifier.input={','.join(others)}</code>"
            f"{hr_note}, <code>dvc queue start</code>, then <code>python -m "
            "pipeline.tools.ablation</code> train the same backbones on the other inputs and "
            "test them against this one on the same groups (<code>python -m "
            "pipeline.tools.experiments_page</code> shows the tables).</p>")


def sr_gain_banner(metrics: dict) -> str:
    """A banner over the SR section when SR does no better than bicubic ('' otherwise)."""
    gain = metrics.get("sr_gain_db")
    if gain is None:
        return ""
    where = "held-out test" if metrics.get("sr_gain_pairs") == "test" else "validation"
    if metrics.get("sr_better_than_bicubic"):
        return (f"<p class='note'>SR gains {gain:+.3f} dB PSNR over bicubic on the {where} "
                "pairs.</p>")
    return (f"<p class='banner'><b>SR does no better than bicubic here:</b> {gain:+.3f} dB "
            f"PSNR on the {where} pairs, under sr.min_gain_db. The classifier's <code>sr"
            "</code> input is then bicubic in effect, and the tables call it <i>sr (no gain "
            "over bicubic)</i>: train SR longer, or read the README's <i>When SR does not "
            "beat bicubic</i>.</p>")


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
    return ("<h2>Training curves (first seed)</h2>"
            f"<img alt='curves' src='{_png(fig)}'>")


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
    return ("<h2>Confusion matrices (test, at the thresholds chosen on validation)</h2>"
            f"<img alt='confusion' src='{_png(fig)}'>")


def shortcut_banner(reports: Path) -> str:
    """The shortcut verdict at the top of the report when the baseline comes close to the
    best backbone ('' otherwise: the section below still gives the figures)."""
    from pipeline.reporting.shortcut import verdict_text

    verdict = read_json(reports / "compare" / "shortcut.json")
    if not verdict.get("shortcut_suspected"):
        return ""
    return f"<p class='banner'><b>Is it the disease or the microscope?</b> " \
           f"{html.escape(verdict_text(verdict))}</p>"


def shortcut_section(reports: Path) -> str:
    """Could something simpler explain the result: the baseline's verdict, which features
    carry its signal, brightness per group, and the acquisition fields per class."""
    from pipeline.reporting.shortcut import RULE_TEXT, verdict_text

    verdict = read_json(reports / "compare" / "shortcut.json")
    baseline = read_json(reports / "eval" / "baseline" / "metrics.json")
    if not verdict and not baseline:
        return ""
    out = ("<h2>Shortcut check: is it the disease or the microscope?</h2>"
           f"<p>{html.escape(verdict_text(verdict))}</p><p class='note'>The baseline is a "
           "logistic regression (scikit-learn) on five per-crop features, trained on the "
           "backbones' training groups, its regularisation (C = "
           f"{baseline.get('chosen_c')}) and cut chosen on their validation groups, and "
           "scored on the same test groups with the same statistics. A shortcut is "
           f"suspected when {html.escape(RULE_TEXT)}.</p>")
    features = baseline.get("features", {})
    if features:
        rows = [{"Feature": name, "What it measures": figures["what"],
                 "Coefficient (standardised)": figures["coefficient"],
                 "Test crop AUC alone": figures["test_crop_auc_alone"],
                 "Higher in": figures["higher_in"]}
                for name, figures in sorted(features.items(),
                                            key=lambda kv: -(kv[1]["test_crop_auc_alone"]
                                                             or 0))]
        out += ("<h3>Which features carry the signal</h3><p class='note'>A feature's "
                "direction is taken from the training split; its AUC alone is on the test "
                "crops.</p>" + _table(pd.DataFrame(rows)))
    out += brightness_figure(reports / "baseline" / "groups.csv")
    out += acquisition_table(read_json(reports / "ingest" / "metrics.json"))
    return out


def brightness_figure(path: Path) -> str:
    """Per-group mean intensity by class: shifts between imaging sessions (the classic batch
    effect) show as classes apart on brightness alone."""
    if not path.is_file():
        return ""
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
    return ("<h3>Brightness per group</h3><p class='note'>Brightness shifts between imaging "
            "sessions are the classic batch effect: if the classes sit apart here, a model "
            "can separate them by brightness alone.</p>"
            f"<img alt='brightness per group' src='{_png(fig)}'>")


def acquisition_table(ingest: dict) -> str:
    """What the files of each class say of their acquisition (ingest's comparison)."""
    from pipeline.data.acquisition import ACQUISITION_FIELDS

    by_field = ingest.get("acquisition") or {}
    if not by_field:
        return ""
    rows = [{"Field": ACQUISITION_FIELDS.get(name, name), **per_class}
            for name, per_class in by_field.items()]
    separating = ingest.get("acquisition_confounds", "none")
    note = ("<p class='banner'><b>Acquisition differs by class:</b> "
            f"{html.escape(separating)} separates the classes on its own.</p>"
            if separating != "none" else
            "<p class='note'>No acquisition field read from the files separates the classes"
            " (values per class; several values: counts in brackets).</p>")
    return "<h3>Acquisition per class, as the files record it</h3>" + note + _table(
        pd.DataFrame(rows))


def comparison_section(reports: Path) -> str:
    from pipeline.classify.scoring import COLLAPSE_RULE
    from pipeline.reporting.compare import readable_costs, readable_paired, readable_table

    out = "<h2>Backbones on the held-out test groups</h2>"
    table = reports / "compare" / "table.csv"
    if table.is_file():
        frame = pd.read_csv(table, keep_default_na=False, na_values=[""])
        frame["caveat"] = frame["caveat"].astype(object).fillna("")
        rules = ", ".join(sorted(set(frame["threshold_rule"].astype(str))))
        out += (f"<p class='note'>Figures of each backbone's first training seed, with 95% "
                f"intervals that count groups, not crops (AUC: Hanley-McNeil score interval "
                f"at group level, clustered DeLong at crop level; proportions: Wilson). The "
                f"cut is chosen on the validation groups by rule <code>{html.escape(rules)}"
                "</code>; table.csv has every figure, the cuts' ranges and the figures at "
                f"0.5. Caveat <i>collapsed</i>: {html.escape(COLLAPSE_RULE)}; its figures are "
                "no finding.</p>")
        out += _table(readable_table(frame.replace({float("nan"): None})))
        out += "<h3>Costs (training, memory, inference; the precision they ran in)</h3>"
        out += _table(readable_costs(frame))
    paired = reports / "compare" / "paired.csv"
    if paired.is_file() and paired.stat().st_size > 1:
        rows = pd.read_csv(paired)
        if not rows.empty:
            out += ("<h3>Paired comparisons (same test groups; sign-flip permutation over "
                    "groups, Holm across the table)</h3>" + _table(readable_paired(rows)))
    out += _img_file(reports / "compare" / "roc_overlay.png", "ROC curves")
    return out


def gradcam_section(reports: Path, backbones: list[str]) -> str:
    layers = "; ".join(f"{b}: <code>{html.escape(BACKBONES[b].cam_layer)}</code>, "
                       f"{html.escape(BACKBONES[b].cam_layer_is)}" for b in backbones)
    images = "".join(_img_file(reports / "eval" / b / "gradcam.png", f"Grad-CAM {b}")
                     for b in backbones)
    return ("<h2>Grad-CAM: where the evidence lies</h2><p class='note'>The maps come from the "
            f"last convolutional block of each backbone ({layers}): the deepest maps that "
            "still keep the image's layout.</p>" + images)


def crossval_section(reports: Path) -> str:
    summary = reports / "crossval" / "summary.csv"
    frame = pd.read_csv(summary) if summary.is_file() else pd.DataFrame()
    if frame.empty:  # split.folds: 0
        return ""
    return "<h2>Cross-validation by group (mean ± sd over folds)</h2>" + _table(frame)


def ablation_section(reports: Path) -> str:
    """The SR ablation written by `python -m pipeline.tools.ablation`, one table per dataset."""
    from pipeline.reporting.ablation import readable_cells, readable_pairs

    path, paired_path = reports / "ablation" / "table.csv", reports / "ablation" / "paired.csv"
    if not path.is_file():
        return ""
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    paired = (pd.read_csv(paired_path, keep_default_na=False, na_values=[""])
              if paired_path.is_file() and paired_path.stat().st_size > 1 else pd.DataFrame())
    out = ("<h2>Does SR help? (ablation)</h2><p class='note'>The same backbones trained on "
           "each input (raw acquired crops, bicubic, SR, the original hr crops), tested on "
           "held-out groups; 95% intervals count groups. The paired comparisons set SR "
           "against raw, bicubic and hr trained the same way, on the same test groups: the "
           "AUC difference at group and crop level with a sign-flip permutation over groups "
           "(Holm-adjusted across the table), and the difference of the seed means beside "
           "the seed-to-seed sd.</p>")
    for dataset, part in table.groupby("dataset", sort=True):
        out += f"<h3>Data: {html.escape(str(dataset))}</h3>" + _table(readable_cells(part))
        rows = paired[paired["dataset"] == dataset] if not paired.empty else paired
        if not rows.empty:
            out += _table(readable_pairs(rows))
    return out


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
        return f"<p class='note'>experiments unavailable: {html.escape(str(exc))}</p>"
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
    return ("<h2>lr x batch_size grid (test AUC, group and crop level)"
            f"</h2><p class='note'>{html.escape(describe_left_out(collected.left_out))}; "
            f"{duplicates} repeated cells: the newest kept.</p>" + _table(shown))


def facts_table(facts: list[tuple[str, str]]) -> str:
    """The header's table of what ran (provenance.run_facts); '' without facts."""
    rows = "".join(f"<tr><th>{html.escape(what)}</th><td>{html.escape(fact)}</td></tr>"
                   for what, fact in facts)
    return f"<div class='wide'><table class='facts'>{rows}</table></div>" if rows else ""


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
    body = "\n".join(s for s in sections if s)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>TDP-43 pipeline report"
            f"</title><style>{STYLE}</style></head><body><h1>TDP-43 classification: pipeline "
            f"report</h1>{facts_table(facts)}"
            f"<p class='note'>All figures come from held-out test groups unless "
            f"marked otherwise; AUC is the area under the ROC curve, accuracy the share "
            f"correct at the threshold chosen on the validation split (named in the "
            f"tables).</p>{shortcut_banner(reports)}{body}</body></html>\n")


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
