"""An explorer of a finished run (notebook 10): every test image, filtered and sorted, both
branches' view of it, and a w slider that re-fuses it with the trained fusion layer.

Nothing retrains. A model's outputs on the test set are computed once, in the evaluation's own test
batches (ARM's batch term as the report holds it, ``training.fusion_outputs``), and kept in
``<run>/explore/``: the per-image features F_RGB and F_landmark, both heads' logits and the factor
on F_landmark. Re-fusing at another w is then eq. 2 and the fusion layer on those features, for
every test image at once: the filtered set's accuracy follows the slider live. Grad-CAM++ of the
chosen image is computed on demand (``explain.explain``).

``ExplorerData`` is the model-free part (tables, filters, re-fusion, figures); ``Explorer`` wraps it
in ipywidgets for JupyterLab. In the HTML report, where no kernel runs, notebook 10 shows a static
gallery of the default selection.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from fer_lib import models, training
from fer_lib.evaluation import explain
from fer_lib.io import BATCH_REPORT_ENV, save_torch
from fer_lib.models import FusionOutput
from fer_lib.run.fusion_runs import canonical_weighting
from fer_lib.settings import PAPER_W, PAPER_WEIGHTING

# Display name -> (weighting, w, variant) of a fusion run (``Experiment.fusion_run``); the baseline
# is every run's RGB head
MODELS = {
    f"proposed (confidence x agreement, w = {PAPER_W:g})": (PAPER_WEIGHTING, PAPER_W, None),
    "naive fusion (no weighting)": ("none", 1.0, None),
    "confidence only": ("confidence", 1.0, None),
    f"agreement only (w = {PAPER_W:g})": ("agreement", PAPER_W, None),
    "calibrated confidence x agreement": ("calibrated", PAPER_W, None),
    "learned weighting": ("learned", PAPER_W, None),
    "coordinate branch (MLP)": (PAPER_WEIGHTING, PAPER_W, "coords"),
}
PROPOSED = next(iter(MODELS))
_W_GRID = tuple(round(0.1 * i, 1) for i in range(11))  # w_table's: 0, 0.1, ..., 1
# Table 2
TABLE2_CASES = (
    "RGB right, landmarks right",
    "RGB right, landmarks wrong",
    "RGB wrong, landmarks right",
    "RGB wrong, landmarks wrong",
)
# what fusion did to the baseline's answer
EFFECTS = ("fixed", "broke", "unchanged right", "unchanged wrong")
SORTS = {
    "weight p x w (high first)": ("factor", False),
    "weight p x w (low first)": ("factor", True),
    "landmark confidence (high first)": ("landmark confidence", False),
    "RGB confidence (low first)": ("RGB confidence", True),
    "fused confidence (low first)": ("fused confidence", True),
    "test order": ("index", True),
}
FEATURES_DIR = "explore"


@dataclasses.dataclass
class ModelOutputs:
    """One trained fusion model's outputs on the test set, in the evaluation's own batches."""

    name: str
    seed: int
    model: torch.nn.Module
    config: training.FusionConfig
    folder: Path
    labels: np.ndarray  # (N,)
    out: object  # models.FusionOutput of (N, ...) CPU tensors
    classes: tuple[str, ...]  # the data set's class list, what labels and outputs index

    @property
    def uses_w(self) -> bool:
        return self.model.weighting in ("agreement", "both", "calibrated")

    @torch.no_grad()
    def refuse(self, w: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(fused probabilities (N, classes), factor on F_landmark (N,)) at agreement weight ``w``
        (None: the trained one)."""
        if w is None or not self.uses_w:
            return self.out.fused_logits.softmax(1).numpy(), self.out.weight.numpy()
        trained = self.model.w_disagree
        self.model.w_disagree = float(w)
        try:
            weight = self.model.feature_weight(self.out.landmark_logits, self.out.rgb_logits)
        finally:
            self.model.w_disagree = trained
        fused = self.model.fusion(
            torch.cat([self.out.rgb_feature, weight[:, None] * self.out.landmark_feature], dim=1)
        )
        return fused.softmax(1).numpy(), weight.numpy()

    def table(self, w: float | None = None) -> pd.DataFrame:
        """One row per test image: the classes each head gives, its confidences, Table 2's case and
        fusion's effect (the class list in ``attrs["classes"]``, which ``select`` filters by)."""
        classes = self.classes
        fused, factor = self.refuse(w)
        rgb = self.out.rgb_logits.softmax(1).numpy()
        landmark = self.model.landmark_probabilities(self.out.landmark_logits).numpy()
        names = np.array(classes, dtype=object)  # the class names as str, indexed by class
        frame = pd.DataFrame(
            {
                "index": np.arange(len(self.labels)),
                "true": names[self.labels],
                "RGB": names[rgb.argmax(1)],
                "landmark": names[landmark.argmax(1)],
                "fused": names[fused.argmax(1)],
                "RGB confidence": rgb.max(1),
                "landmark confidence": landmark.max(1),
                "agree": rgb.argmax(1) == landmark.argmax(1),
                "factor": factor,
                "fused confidence": fused.max(1),
            }
        )
        rgb_right, landmark_right, fused_right = (
            frame[c] == frame["true"] for c in ("RGB", "landmark", "fused")
        )
        frame["case"] = np.select(
            [rgb_right & landmark_right, rgb_right & ~landmark_right, ~rgb_right & landmark_right],
            TABLE2_CASES[:3],
            TABLE2_CASES[3],
        )
        frame["effect"] = np.select(
            [~rgb_right & fused_right, rgb_right & ~fused_right, fused_right],
            EFFECTS[:3],
            EFFECTS[3],
        )
        frame.attrs["classes"] = classes
        return frame


def select(
    frame: pd.DataFrame,
    *,
    true: str | None = None,
    predicted: str | None = None,
    case: str | None = None,
    effect: str | None = None,
    sort: str = "weight p x w (high first)",
) -> pd.DataFrame:
    """The rows of ``ModelOutputs.table`` that match every filter given (None: any), sorted by
    ``SORTS[sort]``; the classes are the table's own (``attrs["classes"]``)."""
    classes = frame.attrs["classes"]
    for value, allowed, name in (
        (true, classes, "true class"),
        (predicted, classes, "predicted class"),
        (case, TABLE2_CASES, "case"),
        (effect, EFFECTS, "effect"),
        (sort, tuple(SORTS), "sort"),
    ):
        if value is not None and value not in allowed:
            raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")
    keep = np.ones(len(frame), dtype=bool)
    for column, value in (("true", true), ("fused", predicted), ("case", case), ("effect", effect)):
        if value is not None:
            keep &= (frame[column] == value).to_numpy()
    column, ascending = SORTS[sort]
    return frame[keep].sort_values([column, "index"], ascending=[ascending, True], kind="stable")


def effect_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """How many test images of each Table 2 case fusion fixed, broke or left
    (rows: cases; columns: effects)."""
    counts = pd.crosstab(frame["case"], frame["effect"]).reindex(
        index=list(TABLE2_CASES), columns=list(EFFECTS), fill_value=0
    )
    return counts.rename_axis(index="Table 2 case", columns=None).reset_index()


def w_table(outputs: ModelOutputs, grid=_W_GRID) -> pd.DataFrame:
    """The trained model re-fused at each w: its fused OA, and how many decisions differ from those
    at the trained w."""
    trained = outputs.refuse()[0].argmax(1)
    ws = list(grid)
    fused = [outputs.refuse(w)[0].argmax(1) for w in ws]
    return pd.DataFrame(
        {
            "w": ws,
            "fused OA": [float((f == outputs.labels).mean()) for f in fused],
            "decisions changed": [int((f != trained).sum()) for f in fused],
        }
    )


class ExplorerData:
    """The run's models and the test images, loaded once; ``outputs`` computes or
    reads each model's outputs."""

    def __init__(self, experiment):
        self.ex = experiment
        self._outputs: dict[tuple[str, int], ModelOutputs] = {}
        # Grad-CAM++ per (model, seed, image): it explains the trained model,
        # whatever w the slider shows
        self._cams: dict[tuple[str, int, int], explain.Explanation] = {}

    def models(self, seed: int | None = None) -> list[str]:
        """The MODELS this run has trained for ``seed`` (default: the first)."""
        seed = self.ex.seeds[0] if seed is None else seed
        return [
            name for name in MODELS if (self._folder(name, seed) / "predictions_fused.csv").exists()
        ]

    def _folder(self, name: str, seed: int) -> Path:
        weighting, w, variant = MODELS[name]
        return self.ex.fusion.folder(*canonical_weighting(weighting, w), seed, variant)

    def trained(
        self, name: str, seed: int | None = None
    ) -> tuple[models.FusionModel, training.FusionConfig, Path]:
        """(model on the CPU in eval mode, its config, its run folder) of one of ``MODELS``."""
        seed = self.ex.seeds[0] if seed is None else seed
        if name not in MODELS:
            raise ValueError(f"model {name!r} is not one of {', '.join(MODELS)}")
        folder = self._folder(name, seed)
        if not (folder / "best.pt").exists():
            raise FileNotFoundError(
                f"{folder / 'best.pt'}: this run has no trained {name!r} for seed {seed}; run "
                "./run_all.sh (or the notebooks up to 06) first. Trained here: "
                f"{', '.join(self.models(seed)) or 'none'}"
            )
        model, config = training.load_fusion_checkpoint(
            folder / "best.pt", self.ex.baselines.model(seed)
        )
        return model.cpu().eval(), config, folder

    def outputs(self, name: str, seed: int | None = None) -> ModelOutputs:
        seed = self.ex.seeds[0] if seed is None else seed
        if (name, seed) in self._outputs:
            return self._outputs[(name, seed)]
        model, config, folder = self.trained(name, seed)
        path = self.ex.run_dir / FEATURES_DIR / f"{folder.name}.pt"
        stamp = (folder / "best.pt").stat().st_mtime_ns
        saved = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        if saved is None or saved.get("stamp") != stamp:  # computed once per trained model
            with torch.no_grad():
                out = training.fusion_outputs(
                    model, self.ex.test, self.ex.baselines.rgb_cache("test", seed), config
                )
            saved = {"stamp": stamp, **out._asdict()}
            save_torch(saved, path)
        out = FusionOutput(*(saved[field] for field in FusionOutput._fields))
        test = self.ex.test
        result = ModelOutputs(
            name, seed, model, config, folder, test.labels.numpy(), out, tuple(test.classes)
        )
        self._outputs[(name, seed)] = result
        return result

    def draw_gallery(
        self, frame: pd.DataFrame, *, count: int = 16, columns: int = 8, title: str = ""
    ) -> plt.Figure:
        """The aligned faces of the first ``count`` rows of ``frame``, titled true / fused (RGB)."""
        rows = frame.head(count)
        lines = max(1, -(-len(rows) // columns))
        fig, axes = plt.subplots(
            lines, columns, figsize=(1.6 * columns, 2.3 * lines + 0.3), squeeze=False
        )
        for ax in axes.ravel():
            ax.axis("off")
        for ax, row in zip(axes.ravel(), rows.itertuples(index=False)):
            ax.imshow(self.ex.test.images[row.index].permute(1, 2, 0).numpy())
            mark = row.effect if row.effect in ("fixed", "broke") else ""
            ax.set_title(
                f"#{row.index} {row.true}\nfused {row.fused} {mark}\nRGB {row.RGB}", fontsize=7
            )
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        return fig

    def gradcam(self, outputs: ModelOutputs, index: int) -> explain.Explanation:
        """Grad-CAM++ of both branches for one test image, computed once per model and image (moving
        the w slider redraws the panel without computing it again)."""
        key = (outputs.name, outputs.seed, int(index))
        if key not in self._cams:
            cache = self.ex.baselines.rgb_cache("test", outputs.seed)
            self._cams[key] = explain.explain(
                outputs.model, self.ex.test, cache, outputs.config, [index]
            )
        return self._cams[key]

    def draw_panel(
        self, outputs: ModelOutputs, index: int, w: float | None = None, *, cams: bool = False
    ) -> plt.Figure:
        """One test image: the aligned face and its landmark heatmap (with Grad-CAM++ of both
        branches when ``cams``), both heads' and the fused probabilities at ``w``, with the
        confidence p, the agreement and the factor."""
        index = int(index)
        fused, factor = outputs.refuse(w)
        rgb = outputs.out.rgb_logits[index].softmax(0).numpy()
        logits = outputs.out.landmark_logits[index : index + 1]
        landmark = outputs.model.landmark_probabilities(logits)[0].detach().numpy()
        face = self.ex.test.images[index].permute(1, 2, 0).numpy()
        heatmap = None
        if outputs.config.landmark_input == "heatmaps":
            at = torch.tensor([index])
            heatmap = training.landmark_inputs(self.ex.test, at, None, outputs.config, "cpu")[0, 0]
            heatmap = heatmap.numpy()
        panels = 4 if cams and heatmap is not None else 2
        fig, axes = plt.subplots(
            1,
            panels + 1,
            figsize=(2.6 * panels + 4.2, 2.8),
            gridspec_kw={"width_ratios": [1] * panels + [1.9]},
        )
        axes[0].imshow(face)
        titles = [f"#{index}: true {outputs.classes[outputs.labels[index]]}"]
        if heatmap is not None:
            axes[1].imshow(heatmap, cmap="gray")
            titles.append("landmark heatmap")
        else:
            points = self.ex.test.points[index].numpy()
            axes[1].imshow(face)
            axes[1].scatter(points[:, 0], points[:, 1], s=4, c="yellow")
            titles.append("landmarks (coordinate branch)")
        if panels == 4:
            cam = self.gradcam(outputs, index)
            axes[2].imshow(explain.overlay(cam.images[0], cam.rgb_cam[0]))
            axes[3].imshow(explain.overlay(cam.heatmaps[0], cam.landmark_cam[0]))
            titles += ["Grad-CAM++ RGB (layer4)", "Grad-CAM++ landmark (conv5)"]
        for ax, title in zip(axes, titles):
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        bars, y = axes[-1], np.arange(len(outputs.classes))
        heads = {"RGB head": rgb, "landmark head": landmark, "fused": fused[index]}
        for offset, (label, values) in zip((-0.27, 0.0, 0.27), heads.items()):
            bars.barh(y + offset, values, height=0.26, label=label)
        bars.set_yticks(y, outputs.classes, fontsize=7)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.legend(fontsize=6, loc="lower right")
        shown = outputs.model.w_disagree if w is None else w
        agree = rgb.argmax() == landmark.argmax()
        bars.set_title(
            f"p = {landmark.max():.2f}, {'agree' if agree else 'disagree'}, factor "
            f"{factor[index]:.2f}" + (f" (w = {shown:.2f})" if outputs.uses_w else ""),
            fontsize=8,
        )
        fig.tight_layout()
        return fig


def choice(options, description: str, width: str, *, any_value: bool = False) -> widgets.Dropdown:
    """A labelled dropdown; ``any_value``: "any" (no filter) first, then each option as itself."""
    if any_value:
        options = [("any", None), *((option, option) for option in options)]
    style = {"description_width": width}
    return widgets.Dropdown(options=options, description=description, style=style)


def filter_choices(ex, data: ExplorerData, width: str) -> tuple[widgets.Dropdown, ...]:
    """The explorer's and the editor's first choices: seed, model, true class and Table 2 case."""
    return (
        choice(ex.seeds, "seed", width),
        choice(data.models(ex.seeds[0]), "model", width),
        choice(ex.classes, "true class", width, any_value=True),
        choice(TABLE2_CASES, "Table 2 case", width, any_value=True),
    )


class Explorer:
    """The ipywidgets explorer: choose seed and model, filter and sort the
    test images, pick one, move w."""

    def __init__(self, experiment, data: ExplorerData | None = None):
        self.data = data or ExplorerData(experiment)
        ex = experiment
        self.seed, self.model, self.true, self.case = filter_choices(ex, self.data, "8em")
        self.predicted = choice(ex.classes, "fused class", "8em", any_value=True)
        self.effect = choice(EFFECTS, "fusion", "8em", any_value=True)
        self.sort = choice(list(SORTS), "sort by", "8em")
        self.image = widgets.Select(options=[], rows=10, description="image")
        self.w = widgets.FloatSlider(
            value=PAPER_W, min=0.0, max=1.0, step=0.05, description="w", continuous_update=False
        )
        self.cams = widgets.Checkbox(value=False, description="Grad-CAM++ (a few seconds)")
        self.summary = widgets.HTML()
        # the chosen image's fused class at this w (read by the browser test)
        self.prediction = widgets.HTML()
        self.figure, self.gallery = widgets.Output(), widgets.Output()
        filters = (self.seed, self.model, self.true, self.predicted, self.case, self.effect)
        for control in (*filters, self.sort, self.w):
            control.observe(self._refilter, names="value")
        for control in (self.image, self.cams):
            control.observe(self._redraw, names="value")
        self._busy = False
        self.widget = layout(
            [self.seed, self.model],
            [self.true, self.predicted],
            [self.case, self.effect],
            [self.sort, self.w],
            self.summary,
            [self.image, widgets.VBox([self.cams, self.prediction])],
            self.figure,
            self.gallery,
        )
        self._refilter()

    def _current(self) -> ModelOutputs:
        return self.data.outputs(self.model.value, self.seed.value)

    def _refilter(self, *_):
        if self._busy:  # options set below fire their own change events
            return
        self._busy = True
        try:
            self._apply_filters()
        finally:
            self._busy = False
        self._redraw()

    def _apply_filters(self):
        models = self.data.models(self.seed.value)
        if self.model.options != tuple(models):
            self.model.options = models
        outputs = self._current()
        frame = outputs.table(self.w.value)
        chosen = select(
            frame,
            true=self.true.value,
            predicted=self.predicted.value,
            case=self.case.value,
            effect=self.effect.value,
            sort=self.sort.value,
        )
        # NaN where nothing is chosen
        oa, rgb = (float((chosen[c] == chosen["true"]).mean()) for c in ("fused", "RGB"))
        self.summary.value = (
            f"<b>{len(chosen)}</b> of {len(frame)} test images; on them fused OA <b>{oa:.3f}</b> "
            f"at w = {self.w.value:.2f} (RGB head "
            f"{rgb:.3f}){'' if outputs.uses_w else ' - w does not act on this weighting'}"
        )
        choose_image(self.image, chosen)
        self.gallery.clear_output(wait=True)
        with self.gallery:
            display_figure(self.data.draw_gallery(chosen, title="the first 16 of the selection"))

    def _redraw(self, *_):
        if self._busy:
            return
        if self.image.value is None:
            self.prediction.value = ""
            return
        outputs = self._current()
        fused, _ = outputs.refuse(self.w.value)
        self.prediction.value = (
            f"<span class='fer-prediction'>fused at w = {self.w.value:.2f}: "
            f"{outputs.classes[int(fused[self.image.value].argmax())]}</span>"
        )
        self.figure.clear_output(wait=True)
        with self.figure:
            display_figure(
                self.data.draw_panel(outputs, self.image.value, self.w.value, cams=self.cams.value)
            )


def layout(*rows) -> widgets.VBox:
    """The controls one row under the other; a list is a row of several."""
    return widgets.VBox([widgets.HBox(row) if isinstance(row, list) else row for row in rows])


def choose_image(image: widgets.ValueWidget, chosen: pd.DataFrame) -> None:
    """The selection's first 500 images as ``image``'s options, keeping the image shown if it is
    still among them (else the first, or None)."""
    keep = image.value
    image.options = [
        (f"#{r.index} {r.true}: fused {r.fused}, RGB {r.RGB}, lm {r.landmark}", int(r.index))
        for r in chosen.head(500).itertuples()
    ]
    values = [value for _, value in image.options]
    image.value = keep if keep in values else (values[0] if values else None)


def display_figure(fig: plt.Figure) -> None:
    display(fig)
    plt.close(fig)  # shown once, not again at the end of the cell


def in_batch_report(what: str, notebook: str, purpose: str) -> bool:
    """Where the pipeline renders the report (no kernel behind the page), say where the live
    ``what`` lives and return True."""
    in_report = bool(os.environ.get(BATCH_REPORT_ENV))
    if in_report:
        display(
            Markdown(
                f"*The live {what} is not part of the HTML report (no kernel runs behind it): open "
                f"`notebooks/{notebook}` in JupyterLab (`./run_all.sh lab`) and run it {purpose}.*"
            )
        )
    return in_report


def show(experiment, data: ExplorerData | None = None) -> None:
    """Display the live explorer, or, in the HTML report, say where it lives."""
    if not in_batch_report("explorer", "10_explore.ipynb", "to use it"):
        display(Explorer(experiment, data).widget)
