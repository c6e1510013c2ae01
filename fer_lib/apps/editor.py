"""The live what-if editor of notebook 11 (JupyterLab): drag a test face's landmarks, move them
toward a class's mean, jitter them, hide part of the image, and watch both heads, the fusion, the
landmark confidence p, the agreement and the factor on F_landmark follow.

The answers are ``whatif.FaceWhatIf``'s (the evaluation's own functions, nothing retrained); this
module is the widgets: bqplot for the face and its draggable points, ipywidgets for the rest. Where
the pipeline renders the HTML report (no kernel behind the page) ``show`` says where the editor
lives.
"""

from __future__ import annotations

import contextlib
import io

import bqplot
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from PIL import Image

from fer_lib.apps import explore, whatif
from fer_lib.evaluation import explain

NO_REGION = "nothing"
BOX = "a box (draw it on the face, or the sliders)"
HEADS = {"rgb": "RGB head", "landmark": "landmark head", "fused": "fused"}
HEAD_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c")
# the bars' key, above them (a bqplot legend inside the plot hides the bars near 1)
BAR_KEY = " ".join(
    f"<span style='color:{colour}'>&#9632;</span> {name}"
    for colour, name in zip(HEAD_COLOURS, HEADS.values())
)


def png(array: np.ndarray) -> bytes:
    """PNG bytes of an (S, S, 3) uint8 or (S, S) float image in [0, 1] (grey)."""
    if array.dtype != np.uint8:
        array = (np.clip(array / max(float(array.max()), 1e-12), 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def _canvas(size: int, title: str) -> tuple[bqplot.Figure, dict, bqplot.Image]:
    """A square bqplot figure whose scales are the S x S canvas, y pointing down as in an image,
    showing a PNG image mark."""
    scales = {
        "x": bqplot.LinearScale(min=0, max=size),
        "y": bqplot.LinearScale(min=0, max=size, reverse=True),
    }
    image = bqplot.Image(image=widgets.Image(format="png"), scales=scales, x=[0, size], y=[size, 0])
    figure = bqplot.Figure(
        marks=[image],
        title=title,
        fig_margin={"top": 30, "bottom": 5, "left": 5, "right": 5},
        layout=widgets.Layout(width="290px", height="310px"),
        min_aspect_ratio=1,
        max_aspect_ratio=1,
    )
    return figure, scales, image


class Editor:
    """The ipywidgets/bqplot editor; ``widget`` is what the notebook displays."""

    def __init__(self, experiment, data: explore.ExplorerData | None = None):
        self.data = data or explore.ExplorerData(experiment)
        ex = self.data.ex
        self.class_means = whatif.class_mean_points(ex.train)
        self.face: whatif.FaceWhatIf | None = None
        self.evaluated: whatif.Answer | None = None  # the face's answer as the report evaluated it
        self._busy = False
        labelled = {"style": {"description_width": "7em"}}
        self.seed, self.model, self.true, self.case = explore.filter_choices(ex, self.data, "7em")
        self.image = explore.choice([], "image", "7em")
        self.target = explore.choice(list(ex.classes), "toward", "7em")
        slider = {"value": 0, "min": 0, "continuous_update": False}
        self.amount = widgets.FloatSlider(max=1, step=0.05, description="how far", **slider)
        self.jitter = widgets.FloatSlider(max=8, step=0.5, description="jitter (px)", **slider)
        self.noise_seed = widgets.IntText(value=0, description="noise seed", **labelled)
        self.region = widgets.Dropdown(
            options=[NO_REGION, *whatif.REGIONS, BOX], description="hide", **labelled
        )
        self.fill = widgets.Dropdown(options=whatif.FILLS, description="filled with", **labelled)
        size = ex.test.input_size
        self.rows = widgets.IntRangeSlider(
            value=(size // 4, size // 2), min=0, max=size, description="box rows"
        )
        self.cols = widgets.IntRangeSlider(
            value=(size // 4, 3 * size // 4), min=0, max=size, description="box columns"
        )
        self.cams = widgets.Checkbox(value=False, description="Grad-CAM++ (a few seconds)")
        self.reset = widgets.Button(description="reset the face", icon="undo")
        self.readout = widgets.HTML()
        self.curve = widgets.Output()
        self.cam_output = widgets.Output()
        self._build_figures(size, ex.classes)
        self._connect()
        self._refilter()

    def _build_figures(self, size: int, classes: tuple[str, ...]) -> None:
        """The face with its draggable points, the landmark input and the three heads' bars."""
        self.face_figure, scales, self.face_image = _canvas(size, "drag a point")
        mark = {"colors": ["red"], "default_size": 36, "stroke": "white"}
        self.points = bqplot.Scatter(x=[], y=[], scales=scales, enable_move=True, **mark)
        self.face_figure.marks = [self.face_image, self.points]
        # on the face while BOX is chosen (it takes the mouse from the points then)
        self.brush = bqplot.interacts.BrushSelector(
            x_scale=scales["x"], y_scale=scales["y"], color="yellow"
        )
        self.heatmap_figure, _, self.heatmap_image = _canvas(size, "landmark input")
        bar_x, bar_y = bqplot.OrdinalScale(), bqplot.LinearScale(min=0, max=1)
        self.bars = bqplot.Bars(
            x=list(classes),
            y=np.zeros((3, len(classes))),
            scales={"x": bar_x, "y": bar_y},
            type="grouped",
            colors=list(HEAD_COLOURS),
        )
        self.bar_figure = bqplot.Figure(
            marks=[self.bars],
            axes=[
                bqplot.Axis(scale=bar_x, tick_style={"font-size": "9px"}),
                bqplot.Axis(scale=bar_y, orientation="vertical", tick_format=".1f"),
            ],
            title="probabilities",
            layout=widgets.Layout(width="480px", height="310px"),
        )

    def _connect(self) -> None:
        """Each control's handler, and the layout."""
        for control in (self.seed, self.model, self.true, self.case):
            control.observe(self._refilter, names="value")
        self.image.observe(self._new_face, names="value")
        for control in (self.target, self.amount, self.jitter, self.noise_seed):
            control.observe(self._place_points, names="value")
        for control in (self.region, self.fill, self.rows, self.cols, self.cams):
            control.observe(self.refresh, names="value")
        self.points.observe(self.refresh, names=["x", "y"])
        self.region.observe(self._box_mode, names="value")
        self.brush.observe(self._box_drawn, names=["selected_x", "selected_y"])
        self.reset.on_click(self._reset)
        self.widget = explore.layout(
            [self.seed, self.model],
            [self.true, self.case, self.image],
            [self.target, self.amount, self.reset],
            [self.jitter, self.noise_seed],
            [self.region, self.fill],
            [self.rows, self.cols, self.cams],
            self.readout,
            [self.face_figure, self.heatmap_figure, self.bar_figure],
            self.cam_output,
            self.curve,
        )

    # -- state ------------------------------------------------------------------------------------

    def _outputs(self) -> explore.ModelOutputs:
        return self.data.outputs(self.model.value, self.seed.value)

    def current_points(self) -> torch.Tensor:
        """(K, 2) the points as the face figure shows them."""
        return torch.tensor(np.stack([self.points.x, self.points.y], axis=1), dtype=torch.float32)

    def current_image(self) -> torch.Tensor | None:
        """The face with the chosen region hidden; None where nothing is hidden."""
        if self.face is None or self.region.value == NO_REGION:
            return None
        if self.region.value == BOX:
            box = (self.rows.value[0], self.cols.value[0], self.rows.value[1], self.cols.value[1])
        else:
            box = whatif.region_box(
                self.face.points, self.region.value, self.face.landmark_set, self.face.size
            )
        return whatif.hide(self.face.image, box, self.fill.value)

    # -- events -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _quietly(self):
        """Controls set inside fire no handler (each would answer again, half-updated)."""
        self._busy = True
        try:
            yield
        finally:
            self._busy = False

    def _refilter(self, *_):
        if self._busy:
            return
        models = self.data.models(self.seed.value)
        if self.model.options != tuple(models):
            with self._quietly():
                self.model.options = models
        frame = self._outputs().table()
        chosen = explore.select(frame, true=self.true.value, case=self.case.value)
        with self._quietly():
            explore.choose_image(self.image, chosen)
        self._new_face()
        self._draw_curve(chosen["index"].to_numpy())

    def _new_face(self, *_):
        if self._busy:
            return
        if self.image.value is None:
            self.face = None
            self.readout.value = "<i>no test image matches the filters</i>"
            return
        self.face = whatif.face_of(self.data, self._outputs(), self.image.value)
        self.evaluated = self.face.answer()
        self._place_points()  # its refresh draws the face

    def _place_points(self, *_):
        """The face's points moved toward the chosen class and jittered, as the sliders say."""
        if self._busy or self.face is None:
            return
        points = self.face.points
        if self.amount.value:
            points = whatif.toward(
                points,
                self.class_means[self.data.ex.classes.index(self.target.value)],
                self.amount.value,
            )
        if self.jitter.value:
            noise = whatif.jitter_noise(points, self.noise_seed.value)
            points = whatif.jittered(points, self.jitter.value, self.face.size, noise)
        with self.points.hold_sync():
            with self._quietly():  # noqa: SIM117 - only x is set quietly
                self.points.x = points[:, 0].numpy()
            self.points.y = points[:, 1].numpy()  # one refresh, with both coordinates

    def _box_mode(self, *_):
        """The brush on the face while a box is hidden; the points draggable otherwise."""
        self.face_figure.interaction = self.brush if self.region.value == BOX else None

    def _box_drawn(self, *_):
        """The box drawn on the face, as the sliders' rows and columns."""
        x, y = self.brush.selected_x, self.brush.selected_y
        if x is None or y is None or len(x) != 2 or len(y) != 2:
            return
        size = self.rows.max
        rows, cols = (tuple(int(np.clip(round(v), 0, size)) for v in sorted(a)) for a in (y, x))
        with self._quietly():
            self.rows.value, self.cols.value = rows, cols
        self.refresh()

    def _reset(self, *_):
        with self._quietly():
            self.amount.value, self.jitter.value, self.region.value = 0, 0, NO_REGION
        self._place_points()

    def refresh(self, *_) -> whatif.Answer | None:
        """Answer again for the points and image shown; update the numbers, the bars and the
        landmark input (and the CAMs when asked)."""
        if self._busy or self.face is None or len(self.points.x) != len(self.face.points):
            return None
        points, image = self.current_points(), self.current_image()
        edited = not torch.equal(points, self.face.points)
        answer = self.face.answer(points if edited else None, image)
        # each head's largest change of a probability: an edit's effect, however small
        change = ", ".join(
            f"{name} {np.abs(getattr(answer, head) - getattr(self.evaluated, head)).max():.1e}"
            for head, name in HEADS.items()
        )
        self.readout.value = (
            f"<span class='fer-whatif'>{answer.summary()}</span><br><small>"
            f"<span class='fer-whatif-change'>largest change of a probability from the face as "
            f"evaluated: {change}</span><br>true "
            f"{self.face.classes[self.face.label]}; "
            f"{'points moved' if edited else 'points as detected'}; "
            f"{'region hidden' if image is not None else 'image as is'}; bars: {BAR_KEY}</small>"
        )
        self.bars.y = np.stack([getattr(answer, head) for head in HEADS])
        self.face_image.image.value = png(
            (self.face.image if image is None else image).permute(1, 2, 0).numpy()
        )
        if answer.heatmap is not None:
            self.heatmap_image.image.value = png(answer.heatmap)
        self.cam_output.clear_output(wait=True)
        if self.cams.value and answer.heatmap is not None:
            with self.cam_output:
                explore.display_figure(self._draw_cams(points if edited else None, image))
        return answer

    # -- figures ----------------------------------------------------------------------------------

    def _draw_cams(self, points, image) -> plt.Figure:
        rgb_cam, landmark_cam, explained = self.face.gradcam(points, image)
        shown = (self.face.image if image is None else image).permute(1, 2, 0).numpy() / 255
        heatmap = self.face.landmark_input(self.face.points if points is None else points)
        fig, axes = plt.subplots(1, 2, figsize=(5.2, 2.8))
        axes[0].imshow(explain.overlay(shown.astype(np.float32), rgb_cam))
        axes[1].imshow(explain.overlay(heatmap[0, 0].float().cpu().numpy(), landmark_cam))
        for ax, branch in zip(axes, ("RGB (layer4)", "landmark (conv5)")):
            ax.set_title(f"Grad-CAM++ {branch}", fontsize=8)
            ax.axis("off")
        fig.suptitle(f"explaining the fused {self.face.classes[explained]}", fontsize=8)
        fig.tight_layout()
        return fig

    def _draw_curve(self, index: np.ndarray) -> None:
        """Landmark-head and fused accuracy of the selection against jitter (each seed of the run),
        the RGB head a line; the study is computed once per model and kept with the run."""
        self.curve.clear_output(wait=True)
        with self.curve:
            if not len(index):
                return
            studies = whatif.jitter_studies(self.data, (self.model.value,), progress=True)
            table = whatif.jitter_table(studies, index)
            explore.display_figure(
                whatif.plot_jitter(table, f"the selection: {len(index)} test images")
            )


def show(experiment, data: explore.ExplorerData | None = None) -> Editor | None:
    """Display the live editor and return it, or, in the HTML report, say where it lives."""
    if explore.in_batch_report(
        "what-if editor", "11_what_if.ipynb", "to drag the landmarks yourself"
    ):
        return None
    editor = Editor(experiment, data)
    display(editor.widget)
    return editor
