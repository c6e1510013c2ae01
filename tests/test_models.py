import copy
import math
import re

import pytest
import torch
import torchvision
from torch.nn import functional

from fer_lib import models
from fer_lib.models import (
    ARM,
    ARMNet,
    CheckpointError,
    FusionModel,
    LandmarkCNN,
    arm_geometry,
    build_resnet18_trunk,
    load_arm_checkpoint,
    save_arm_checkpoint,
)

SMALL = 128  # smallest size both branches accept: trunk map 4x4, ARM feature 5x5 = 25


def released_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the ARM authors' RAF-DB checkpoint (ARM_NOTES.md):
    ResNet18 trunk + ARM + fc."""
    shapes: dict[str, tuple[int, ...]] = {"features.0.weight": (64, 3, 7, 7)}

    def bn(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("features.1", 64)
    for layer, (c_in, c_out) in zip((4, 5, 6, 7), ((64, 64), (64, 128), (128, 256), (256, 512))):
        for block in (0, 1):
            prefix = f"features.{layer}.{block}"
            shapes[f"{prefix}.conv1.weight"] = (c_out, c_in if block == 0 else c_out, 3, 3)
            bn(f"{prefix}.bn1", c_out)
            shapes[f"{prefix}.conv2.weight"] = (c_out, c_out, 3, 3)
            bn(f"{prefix}.bn2", c_out)
            if block == 0 and c_in != c_out:
                shapes[f"{prefix}.downsample.0.weight"] = (c_out, c_in, 1, 1)
                bn(f"{prefix}.downsample.1", c_out)
    shapes["arm.de_albino.weight"] = (1, 1, 32, 32)
    bn("arm.bn", 2)
    shapes["arm.alpha"] = (1,)
    shapes["fc.weight"] = (7, 121)
    shapes["fc.bias"] = (7,)
    return shapes


def randomise_arm(net: ARMNet, seed: int = 0) -> ARMNet:
    """Non-default BatchNorm statistics and alpha, so that a loader that
    skips them would be caught."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.arm.bn.running_mean.copy_(torch.randn(2, generator=g))
        net.arm.bn.running_var.copy_(torch.rand(2, generator=g) + 0.5)
        net.arm.bn.weight.copy_(torch.rand(2, generator=g) + 0.5)
        net.arm.alpha.fill_(0.7)
    return net.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: one thread is several times faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net224() -> ARMNet:
    torch.manual_seed(0)
    return randomise_arm(ARMNet(224))


@pytest.fixture(scope="module")
def small_template() -> ARMNet:
    torch.manual_seed(1)
    return randomise_arm(ARMNet(SMALL))


@pytest.fixture
def small_net(small_template) -> ARMNet:
    # a fresh copy per test: cheaper than initialising ResNet18 again
    return copy.deepcopy(small_template)


def images(n: int, size: int = SMALL, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def heatmaps(n: int, size: int = SMALL, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


# ---- geometry and the landmark CNN ---------------------------------------------------------------


def test_landmark_cnn_layer_shapes_match_table1():
    net = LandmarkCNN()
    # Table 1: (name, kernel, output C, H=W)
    expected = [
        ("conv1", 5, 32, 220),
        ("pool1", 2, 32, 110),
        ("conv2", 3, 64, 108),
        ("pool2", 2, 64, 54),
        ("conv3", 3, 128, 52),
        ("pool3", 2, 128, 26),
        ("conv4", 3, 256, 24),
        ("pool4", 2, 256, 12),
        ("conv5", 3, 512, 10),
        ("conv6", 4, 512, 7),
    ]
    x = heatmaps(1, 224)
    assert [name for name, _ in net.named_children()] == [name for name, *_ in expected]
    with torch.no_grad():
        for (name, module), (_expected_name, kernel, channels, side) in zip(
            net.named_children(), expected
        ):
            x = module(x)
            assert x.shape == (1, channels, side, side), name
            layer = module[0] if name.startswith("conv") else module
            assert layer.kernel_size in (kernel, (kernel, kernel)) and layer.padding in (
                0,
                (0, 0),
            ), name
            assert layer.stride in (1, (1, 1)) if name.startswith("conv") else layer.stride == 2
    assert net.last_kernel == 4


def test_landmark_cnn_cam_layer_is_the_post_relu_conv5_map():
    net = LandmarkCNN()
    assert net.cam_layer is net.conv5 and isinstance(net.conv5[-1], torch.nn.ReLU)
    captured = []
    handle = net.cam_layer.register_forward_hook(
        lambda module, inputs, output: captured.append(output)
    )
    with torch.no_grad():
        out = net(heatmaps(1, 224))
    handle.remove()
    assert captured[0].shape == (1, 512, 10, 10) and captured[0].min() >= 0
    assert out.shape == (1, 512, 7, 7)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in LandmarkCNN(batch_norm=True).modules())


@pytest.mark.parametrize("size, kernel, side", [(128, 1, 4), (160, 2, 5)])
def test_landmark_cnn_last_kernel_adapts_to_the_trunk_map(size, kernel, side):
    net = LandmarkCNN(size)
    assert net.last_kernel == kernel
    with torch.no_grad():
        assert net(heatmaps(1, size)).shape == (1, 512, side, side)


def test_input_sizes():
    assert arm_geometry(224) == (7, 112, 11)
    assert arm_geometry(64) == (2, 32, 1)  # the smallest: one ARM output position
    assert arm_geometry(128) == (4, 64, 5)
    for size in (32, 100, 112, 0, 240):
        with pytest.raises(
            ValueError, match=r"valid sizes up to 448: \[64, 96, 128, 160, 192, 224"
        ):
            arm_geometry(size)
    with pytest.raises(ValueError, match=r"\[128, 160, 192, 224"):
        LandmarkCNN(96)  # ARM fits, but the 5th conv map (2x2) is smaller than the 3x3 trunk map
    net = ARMNet(64).eval()
    assert net.fc.in_features == 1
    with torch.no_grad():
        assert net(images(2, 64)).shape == (2, 7)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        net(images(1, 96))


# ---- the ARM block -------------------------------------------------------------------------------


def loop_reference(arm: ARM, x: torch.Tensor) -> torch.Tensor:
    """The ARM code's computation, channel by channel: conv each channel, concat,
    bn, mean + alpha * batch mean."""
    channels = [
        functional.conv2d(x[:, i : i + 1], arm.de_albino.weight, stride=8)
        for i in range(x.shape[1])
    ]
    y = arm.bn(torch.cat(channels, dim=1))  # (B, 2, n, n)
    out = y.mean(dim=1, keepdim=True) + arm.alpha * y.mean(dim=[0, 1])  # (B, 1, n, n)
    return out.flatten(1)


@pytest.mark.parametrize("training", [False, True])
def test_vectorised_de_albino_equals_the_per_channel_loop(training):
    torch.manual_seed(0)
    arm = ARM(out_side=3)
    with torch.no_grad():
        arm.bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
        arm.bn.running_var.copy_(torch.tensor([2.0, 0.5]))
        arm.alpha.fill_(1.3)
    arm.train(training)
    x = torch.randn(4, 2, 48, 48)
    with torch.no_grad():
        expected = loop_reference(arm, x)
        got = arm(x)
    assert got.shape == (4, 9)
    assert (got - expected).abs().max() < 1e-5


def test_cached_per_image_part_gives_the_same_logits(small_net):
    x = images(4)
    with torch.no_grad():
        # one image at a time
        cache = torch.cat([small_net.forward_per_image(x[i : i + 1]) for i in range(4)])
        cached = small_net.head_from_per_image(cache)
        direct = small_net(x)
        feature, logits = small_net.feature_and_logits(x)
    assert (cached - direct).abs().max() < 1e-4
    assert torch.equal(logits, direct) and torch.allclose(small_net.fc(feature), direct)
    assert feature.shape == (4, 25)


def test_batch_mode_depends_on_companions_and_fixed_mode_does_not(small_net):
    x, others = images(3, seed=0), images(2, seed=1)
    with torch.no_grad():
        alone = small_net(x[:1])
        with_x = small_net(x)
        with_others = small_net(torch.cat([x[:1], others]))
    assert (with_x[0] - with_others[0]).abs().max() > 1e-3
    assert (alone[0] - with_x[0]).abs().max() > 1e-3

    small_net.set_affinity("fixed")
    with pytest.raises(RuntimeError, match="estimate_population_mean"):
        small_net(x)
    # (images, labels) or images
    mean = small_net.estimate_population_mean([(others, torch.zeros(2)), x])
    with torch.no_grad():
        per_image = torch.cat([small_net.forward_per_image(others), small_net.forward_per_image(x)])
        alone = small_net(x[:1])
        with_x = small_net(x)
        with_others = small_net(torch.cat([x[:1], others]))
    assert torch.allclose(mean, per_image.mean(0), atol=1e-6)
    assert (alone[0] - with_x[0]).abs().max() < 1e-5
    assert (with_x[0] - with_others[0]).abs().max() < 1e-5
    assert not small_net.training  # estimation keeps the mode it found


# ---- checkpoints ---------------------------------------------------------------------------------


def test_state_dict_has_exactly_the_released_keys_and_shapes(net224):
    expected = released_shapes()
    state = net224.state_dict()
    assert sorted(state) == sorted(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    # layer4, the paper's Grad-CAM layer for the RGB network
    assert net224.cam_layer is net224.features[7]
    assert (
        net224.input_size == 224
        and net224.mean == (0.485, 0.456, 0.406)
        and net224.std == (0.229, 0.224, 0.225)
    )


def test_released_format_loads_strictly_and_computes_the_same(net224, tmp_path):
    state = net224.state_dict()
    authors = {
        "iter": 59,
        "model_state_dict": state,
        "optimizer_state_dict": {"state": {}, "param_groups": []},
    }
    torch.save(authors, tmp_path / "epoch59_acc0.9205.pth")
    torch.save(
        {"model_state_dict": {f"module.{k}": v for k, v in state.items()}},
        tmp_path / "dataparallel.pth",
    )
    x = images(2, 224)
    with torch.no_grad():
        expected = net224(x)
        for name in ("epoch59_acc0.9205.pth", "dataparallel.pth"):
            loaded = load_arm_checkpoint(tmp_path / name)
            assert not loaded.training and loaded.arm.affinity == "batch"
            assert next(loaded.parameters()).device.type == "cpu"
            assert torch.equal(loaded(x), expected)


def test_our_checkpoint_carries_input_size_and_population_mean(small_net, tmp_path):
    small_net.estimate_population_mean([images(3)])
    path = save_arm_checkpoint(small_net, tmp_path / "ours.pth", epoch=3)
    loaded = load_arm_checkpoint(path)
    assert loaded.input_size == SMALL and loaded.arm.affinity == "batch"
    assert torch.equal(loaded.arm.population_mean, small_net.arm.population_mean)
    x = images(2, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded.set_affinity("fixed")(x), small_net.set_affinity("fixed")(x))
    with pytest.raises(CheckpointError, match="saved for input size 128"):
        load_arm_checkpoint(path, input_size=224)


def test_mismatched_checkpoints_name_the_keys(small_net, tmp_path):
    state = small_net.state_dict()
    renamed = dict(state)
    renamed["arm.beta"] = renamed.pop("arm.alpha")
    del renamed["fc.bias"]
    torch.save({"model_state_dict": renamed}, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError) as info:
        load_arm_checkpoint(tmp_path / "renamed.pth", input_size=SMALL)
    message = str(info.value)
    assert str(tmp_path / "renamed.pth") in message
    assert "missing keys (2)" in message and "arm.alpha" in message and "fc.bias" in message
    assert "unexpected keys (1)" in message and "arm.beta" in message

    torch.save({"model_state_dict": state}, tmp_path / "small.pth")
    with pytest.raises(CheckpointError) as info:
        load_arm_checkpoint(tmp_path / "small.pth")  # built for 224: the feature size differs
    message = str(info.value)
    assert "fc.weight: file (7, 25), model (7, 121)" in message and "input_size=128" in message


def test_files_that_are_not_checkpoints(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as info:
        load_arm_checkpoint(junk)
    assert str(junk) in str(info.value) and "epoch59_acc0.9205.pth" in str(info.value)

    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="no model weights found"):
        load_arm_checkpoint(tmp_path / "list.pth")

    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="no such file") as info:
        load_arm_checkpoint(missing)
    assert isinstance(info.value, CheckpointError) and str(missing) in str(info.value)


def test_pretrained_trunk_is_read_locally_or_refused_with_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected_path = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError) as info:
        build_resnet18_trunk(True)
    assert str(expected_path) in str(info.value)
    assert torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url in str(info.value)

    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    expected_path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), expected_path)
    trunk = build_resnet18_trunk(True)
    assert torch.equal(trunk[0].weight, reference.conv1.weight)
    assert torch.equal(trunk[7][1].bn2.running_var, reference.layer4[1].bn2.running_var)


# ---- fusion --------------------------------------------------------------------------------------


def test_fusion_dimensions_at_224(net224):
    model = FusionModel(net224)
    assert model.landmark_head.in_features == 121 and model.fusion.in_features == 242
    assert model.arm.de_albino.weight.shape == (1, 1, 32, 32)


def test_baseline_stays_frozen_and_in_eval_mode(small_net):
    model = FusionModel(small_net).train()
    assert not model.baseline.training and not any(m.training for m in model.baseline.modules())
    assert model.landmark_cnn.training and model.arm.training
    assert all(not p.requires_grad for p in model.baseline.parameters())
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable.isdisjoint(id(p) for p in model.baseline.parameters())
    assert len(trainable) == sum(1 for _ in model.parameters()) - sum(
        1 for _ in model.baseline.parameters()
    )

    before = {k: v.clone() for k, v in model.baseline.state_dict().items()}
    head_before = model.landmark_head.weight.clone()
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    out = model(images(4), heatmaps(4))
    loss = model.loss(out, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    after = model.baseline.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included
    assert all(p.grad is None for p in model.baseline.parameters())
    assert not torch.equal(head_before, model.landmark_head.weight)
    expected = functional.cross_entropy(
        out.landmark_logits, torch.tensor([0, 1, 2, 3])
    ) + functional.cross_entropy(out.fused_logits, torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize(
    "weighting, agree_weight, disagree_weight",
    [
        ("both", 0.5, 0.5 * 0.6),
        ("confidence", 0.5, 0.5),
        ("agreement", 1.0, 0.6),
        ("none", 1.0, 1.0),
    ],
)
def test_weighting_variants_on_a_constructed_case(
    small_net, weighting, agree_weight, disagree_weight
):
    model = FusionModel(small_net, weighting=weighting).eval()
    # landmark head: class 0, p = 0.5
    probabilities = torch.tensor([0.5, 0.25, 0.05, 0.05, 0.05, 0.05, 0.05])
    with torch.no_grad():
        model.landmark_head.weight.zero_()
        model.landmark_head.bias.copy_(probabilities.log())
        model.baseline.fc.weight.zero_()
    for rgb_class, expected in ((0, agree_weight), (2, disagree_weight)):
        with torch.no_grad():
            model.baseline.fc.bias.copy_(functional.one_hot(torch.tensor(rgb_class), 7).float())
            out = model(images(2), heatmaps(2))
        assert torch.allclose(out.weight, torch.full((2,), expected)), (rgb_class, out.weight)
        fused = model.fusion(torch.cat([out.rgb_feature, expected * out.landmark_feature], dim=1))
        assert torch.allclose(out.fused_logits, fused, atol=1e-6)
        assert (out.rgb_logits.argmax(1) == rgb_class).all() and (
            out.landmark_logits.argmax(1) == 0
        ).all()


def test_weight_gradient_switch(small_net):
    for weight_grad in (False, True):
        model = FusionModel(small_net, weight_grad=weight_grad).train()
        assert model(images(2), heatmaps(2)).weight.requires_grad == weight_grad
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    p = math.exp(2) / (math.exp(2) + 6)
    assert model.feature_weight(logits, logits).item() == pytest.approx(p)
    assert model.feature_weight(logits, logits.roll(1, dims=1)).item() == pytest.approx(0.6 * p)


@pytest.mark.parametrize("training", [False, True])
def test_training_from_the_feature_cache_equals_training_from_images(small_net, training):
    torch.manual_seed(0)
    model = FusionModel(small_net).train(training)
    x, h = images(4), heatmaps(4)
    with torch.no_grad():
        cache = torch.cat([model.baseline.forward_per_image(x[i : i + 1]) for i in range(4)])
        from_images = model(x, h)
        from_cache = model.forward_cached(cache, h)
    for name, a, b in zip(from_images._fields, from_images, from_cache):
        assert (a - b).abs().max() < 1e-4, name


def test_fusion_fixed_affinity_from_images_or_cache(small_net):
    model = FusionModel(small_net)
    x, h = images(3), heatmaps(3)
    with torch.no_grad():
        cache = model.baseline.forward_per_image(x)
    model.estimate_population_means([(x, h, torch.zeros(3))])
    rgb_mean, landmark_mean = (
        model.baseline.arm.population_mean.clone(),
        model.arm.population_mean.clone(),
    )
    model.estimate_population_means([(cache, h)])
    assert torch.allclose(model.baseline.arm.population_mean, rgb_mean, atol=1e-6)
    assert torch.allclose(model.arm.population_mean, landmark_mean, atol=1e-6)
    means = models.population_means(model)
    assert set(means) == {"baseline.arm.population_mean", "arm.population_mean"}
    model.set_affinity("fixed").eval()
    with torch.no_grad():
        alone = model(x[:1], h[:1]).fused_logits
        together = model(x, h).fused_logits
    assert (alone[0] - together[0]).abs().max() < 1e-5


def test_the_fitted_temperature_stays_within_its_bounds_of_one_twentieth_and_twenty():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    confident = 12.0 * torch.eye(3)[labels]
    # confidently wrong everywhere: the cross-entropy falls as T grows, so the search stops at its
    # upper bound
    wrong = models.fit_temperature(confident[:, [1, 2, 0]], labels)
    assert wrong == pytest.approx(20.0, rel=2e-3)
    # right everywhere, by a small margin: it falls as T shrinks, down to the lower bound
    right = models.fit_temperature(0.1 * torch.eye(3)[labels], labels)
    assert right == pytest.approx(1 / 20, rel=2e-3)


def test_the_learned_gate_has_one_weight_per_probability_and_agreement():
    gate = models.WeightGate(num_classes=7)
    # 2 x 7 probabilities and the agreement flag: the 15 weights GATE_L2 counts, and one bias
    assert gate.linear.weight.shape == (1, 15) and gate.linear.bias.shape == (1,)
    assert set(gate.state_dict()) == {"linear.weight", "linear.bias"}


def test_the_landmark_cnn_refuses_heatmaps_of_another_size_or_channel_count():
    net = LandmarkCNN(128).eval()
    for shape in ((1, 1, 160, 160), (1, 2, 128, 128), (1, 128, 128)):
        with pytest.raises(
            ValueError, match=rf"expected heatmaps \(B, 1, 128, 128\), got {re.escape(str(shape))}"
        ):
            net(torch.zeros(shape))


def test_the_landmark_cnn_takes_only_an_integer_input_size():
    for size in (224.0, "224", None):
        with pytest.raises(ValueError, match="does not fit the landmark CNN"):
            LandmarkCNN(size)


def test_each_image_weighs_its_own_heads_agreement(small_net):
    # eq. 2 per image: rows 0 and 2 agree (factor p), row 1 disagrees (0.6 p); row 3 picks another
    # class on both
    model = FusionModel(small_net, weighting="both").eval()
    base = torch.tensor([2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    landmark = torch.stack([base, base, base, base.roll(3)])
    rgb = torch.stack([base, base.roll(1), base, base.roll(3)])
    p = math.exp(2) / (math.exp(2) + 6)  # by hand: softmax's top probability
    weight = model.feature_weight(landmark, rgb)
    torch.testing.assert_close(weight, torch.tensor([p, 0.6 * p, p, p]), atol=1e-6, rtol=0)


def test_batch_norm_in_the_landmark_cnn_is_in_every_conv_block_when_asked():
    with_bn = LandmarkCNN(128, batch_norm=True, width=4)
    without = LandmarkCNN(128, width=4)
    count = lambda net: sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # noqa: E731
    assert count(with_bn) == 6 and count(without) == 0


def test_eq2_fuses_each_branchs_map_plus_its_batch_term_or_the_terms_it_is_given(small_net):
    torch.manual_seed(3)
    model = FusionModel(small_net, weighting="both", init_from_baseline=False).eval()
    with torch.no_grad():
        model.arm.alpha.fill_(0.3)  # the landmark ARM's, beside the RGB branch's 0.7
        rgb = small_net.forward_per_image(images(4))
        landmark = model.landmark_per_image(heatmaps(4))
        out = model.forward_per_image_maps(rgb, landmark)
        # by hand: each branch's feature is its per-image map plus alpha x the batch's mean map
        rgb_feature = rgb + 0.7 * rgb.mean(0, keepdim=True)
        landmark_feature = landmark + 0.3 * landmark.mean(0, keepdim=True)
        torch.testing.assert_close(out.rgb_feature, rgb_feature)
        torch.testing.assert_close(out.landmark_feature, landmark_feature)
        torch.testing.assert_close(out.rgb_logits, small_net(images(4)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.landmark_logits, model.landmark_head(landmark_feature))
        weight = model.feature_weight(out.landmark_logits, out.rgb_logits)
        fused = model.fusion(torch.cat([rgb_feature, weight[:, None] * landmark_feature], 1))
        torch.testing.assert_close(out.fused_logits, fused)
        # terms given (Grad-CAM holds them): used instead of this batch's
        zero = torch.zeros(1, rgb.shape[1])
        held = model.forward_per_image_maps(rgb, landmark, batch_terms=(zero, 2 * zero + 1))
        torch.testing.assert_close(held.rgb_feature, rgb)
        torch.testing.assert_close(held.landmark_feature, landmark + 1)


def test_the_arm_block_refuses_maps_that_are_not_two_channel_batches():
    arm = models.ARM(out_side=5, kernel=4, stride=2).eval()
    for shape in [(2, 3, 12, 12), (2, 12, 12), (1, 2, 2, 12, 12)]:
        with pytest.raises(ValueError) as error:
            arm.per_image(torch.zeros(shape))
        assert str(error.value) == f"ARM expects (B, 2, H, W) after PixelShuffle, got {shape}"
    assert arm.per_image(torch.zeros(2, 2, 12, 12)).shape == (2, 25)


def test_an_unknown_affinity_is_refused_naming_the_modes():
    with pytest.raises(ValueError) as error:
        models.ARM(out_side=5, kernel=4, stride=2).set_affinity("global")
    assert str(error.value) == "affinity 'global' is not one of ('batch', 'fixed')"


@pytest.mark.parametrize("given", ["a fusion state without a key", "a baseline's state"])
def test_a_fusion_state_that_does_not_fit_is_named_key_by_key(small_net, tmp_path, given):
    """A fusion model has an ARM but no fc: the check that explains an ARMNet's fc width must not
    read it (it raised AttributeError instead of naming the keys)."""
    model = FusionModel(small_net)
    state = dict(model.state_dict())
    if given == "a fusion state without a key":
        del state["fusion.weight"]
        expected = "missing keys"
    else:
        state = small_net.state_dict()
        expected = "unexpected keys"
    with pytest.raises(models.CheckpointError, match=expected):
        models.load_state_strict(model, state, tmp_path / "best.pt")
