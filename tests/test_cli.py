"""The training and evaluation commands end to end on a tiny data set (narrow networks, 1-2 epochs)."""

import pandas as pd
import pytest

from fer_lib.__main__ import main
from tests.conftest import write_tiny_rafdb


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    data = write_tiny_rafdb(base / "basic", n_per_class=2)
    common = ["--data", str(data), "--device", "cpu"]
    assert main(["train-baseline", *common, "--run-dir", str(base / "baseline"), "--input-size", "128", "--width", "4",
                 "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.3"]) == 0
    assert main(["train-fusion", *common, "--baseline", str(base / "baseline" / "best.pt"), "--run-dir", str(base / "fusion"),
                 "--width", "2", "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.3"]) == 0
    return base, common


def test_training_commands_write_checkpoints_and_predictions(trained):
    base, _ = trained
    for path in ("baseline/best.pt", "baseline/last.pt", "baseline/predictions_test.csv", "fusion/best.pt", "fusion/predictions_fused.csv"):
        assert (base / path).exists(), path
    frame = pd.read_csv(base / "fusion" / "predictions_fused.csv")
    assert len(frame) == 14 and {"image", "label", "predicted", "p_Surprise", "weight"} <= set(frame.columns)


@pytest.mark.parametrize("affinity", ["batch", "fixed"])
def test_evaluate_with_fusion(trained, affinity, capsys):
    base, common = trained
    out = base / f"eval_{affinity}"
    assert main(["evaluate", *common, "--baseline", str(base / "baseline" / "best.pt"), "--fusion", str(base / "fusion" / "best.pt"),
                 "--affinity", affinity, "--batch-size", "4", "--out", str(out)]) == 0
    assert f"affinity {affinity}" in capsys.readouterr().out
    assert len(pd.read_csv(out / "predictions_fused.csv")) == 14


def test_evaluate_refuses_a_fusion_checkpoint_of_another_baseline(trained, tmp_path):
    base, common = trained
    other = tmp_path / "other"
    assert main(["train-baseline", *common, "--run-dir", str(other), "--input-size", "128", "--width", "4",
                 "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.3", "--seed", "5"]) == 0
    with pytest.raises(Exception, match="another baseline"):
        main(["evaluate", *common, "--baseline", str(other / "best.pt"), "--fusion", str(base / "fusion" / "best.pt"), "--out", str(tmp_path / "e")])
