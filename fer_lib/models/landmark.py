"""The landmark branch: the heatmap CNN of the paper's Table 1, and a plain MLP on the points'
coordinates for comparison.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from fer_lib.settings import PAPER_INPUT_SIZE, SIZE_RANGE, landmark_last_kernel

COORDS_HIDDEN = 256  # the coordinate MLP's hidden width


def _conv_block(
    in_channels: int, out_channels: int, kernel: int, batch_norm: bool
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class LandmarkCNN(nn.Sequential):
    """The paper's Table 1 "landmark CNN": (B, 1, s, s) heatmap -> (B, 512, s/32, s/32), s = 224 by
    default.

    Five unpadded convs (5x5 then 3x3, stride 1; 32, 64, 128, 256, 512 channels) with 2x2 max pools
    after the first four, then a size-matching conv (4x4 at 224) whose output has the RGB trunk's
    s/32 side. The paper states no activation or normalisation: each conv block here is conv ->
    [BatchNorm] -> ReLU (ReLU after every conv, the last one too, as ResNet's layer4 output is
    post-ReLU; BatchNorm off by default). Blocks are named ``conv1``..``conv5``, ``conv6`` and
    ``pool1``..``pool4``; ``cam_layer`` is ``conv5``, whose output is the post-ReLU (512, 10, 10)
    map at 224 that the paper explains with Grad-CAM.
    """

    def __init__(
        self, input_size: int = PAPER_INPUT_SIZE, *, batch_norm: bool = False, width: int = 32
    ):
        last_kernel = landmark_last_kernel(input_size) if isinstance(input_size, int) else None
        if last_kernel is None:
            valid = [s for s in SIZE_RANGE if landmark_last_kernel(s)]
            raise ValueError(
                f"input size {input_size!r} does not fit the landmark CNN: its 5th conv map must "
                "be at least as large as the RGB trunk's size/32 map; valid sizes up to 448: "
                f"{valid} (the paper uses 224)"
            )
        blocks: list[tuple[str, nn.Module]] = []
        channels = [1, width, 2 * width, 4 * width, 8 * width, 16 * width]  # Table 1 at width 32
        for i in range(5):
            conv = _conv_block(channels[i], channels[i + 1], 5 if i == 0 else 3, batch_norm)
            blocks.append((f"conv{i + 1}", conv))
            if i < 4:
                blocks.append((f"pool{i + 1}", nn.MaxPool2d(2)))
        blocks.append(("conv6", _conv_block(channels[-1], channels[-1], last_kernel, batch_norm)))
        super().__init__(OrderedDict(blocks))
        self.input_size, self.width, self.out_channels = input_size, width, channels[-1]
        self.last_kernel = last_kernel

    @property
    def cam_layer(self) -> nn.Module:
        """The module to hook for Grad-CAM: ``conv5`` (post-ReLU, before the size-matching conv)."""
        return self.conv5

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, self.input_size, self.input_size):
            raise ValueError(
                f"expected heatmaps (B, 1, {self.input_size}, {self.input_size}), got "
                f"{tuple(x.shape)}"
            )
        return super().forward(x)  # (B, 512, s/32, s/32)


class CoordinateMLP(nn.Sequential):
    """The cheaper landmark branch ("coords"): (B, 2K) aligned coordinates, scaled to [-1, 1] -> (B,
    dim) F_landmark. Two hidden layers (Linear -> [BatchNorm] -> ReLU) and a linear output of the
    RGB feature's size, so that it is fused exactly like the heatmap branch's ARM feature. It
    answers whether the heatmap CNN adds anything over the plain coordinates it is drawn from."""

    def __init__(
        self, num_points: int, dim: int, *, hidden: int = COORDS_HIDDEN, batch_norm: bool = True
    ):
        layers: list[tuple[str, nn.Module]] = []
        sizes = [2 * num_points, hidden, hidden]
        for i in range(2):
            layers.append((f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1], bias=not batch_norm)))
            if batch_norm:
                layers.append((f"bn{i + 1}", nn.BatchNorm1d(sizes[i + 1])))
            layers.append((f"relu{i + 1}", nn.ReLU(inplace=True)))
        layers.append(("out", nn.Linear(hidden, dim)))
        super().__init__(OrderedDict(layers))
        self.num_points = num_points

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != 2 * self.num_points:
            raise ValueError(
                f"expected coordinates (B, {2 * self.num_points}), got {tuple(x.shape)}"
            )
        return super().forward(x)
