"""Runs a user can size: --set overrides, --seed-offset, subsets, run folders,
and the stability comparison."""

import json

import numpy as np
import pandas as pd
import pytest

from fer_lib.cli.main import main
from fer_lib.report import replication
from fer_lib.run.experiment import stratified_subset
from fer_lib.run.pipeline import RUNS_DIR, claim_run_dir, figures_dir_for, run_dir_for
from fer_lib.run.profiles import PROFILES, SettingsError, get_profile, parse_assignments


def test_overrides_are_parsed_and_typed():
    profile = get_profile(
        "paper",
        {
            "baseline_epochs": "2",
            "fusion_epochs": "1",
            "seeds": "1",
            "w_grid": "0.6",
            "train_limit": "500",
        },
    )
    assert (
        profile.baseline_epochs,
        profile.fusion_epochs,
        profile.seeds,
        profile.w_grid,
        profile.train_limit,
    ) == (2, 1, 1, (0.6,), 500)
    assert profile.overrides() == {
        "baseline_epochs": 2,
        "fusion_epochs": 1,
        "seeds": 1,
        "w_grid": "0.6",
        "train_limit": 500,
    }
    assert get_profile("demo").overrides() == {}


def test_seed_offset_shifts_every_seed():
    profile = get_profile("demo", {"seed_offset": "100"})
    assert profile.seed_list == [100 + k for k in range(PROFILES["demo"].seeds)]


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("bogus", "1", "the settings are"),
        ("seeds", "0", "at least 1"),
        ("seeds", "two", "whole number"),
        ("baseline_width", "5", "widths"),
        ("landmark_width", "4", "widths"),
        ("input_size", "100", "does not fit"),
        ("w_grid", "0.6,1.5", "[0, 1]"),
        ("batch_train", "1", "at least 2"),
        ("knobs", "nonsense=1", "the knobs are"),
        ("knobs", "yaw_max_deg=-3", ">= 0"),
        ("synthetic", "100", "TRAIN,TEST"),
        ("augmentation", "mixup", "upstream"),
        ("landmark_batch_norm", "maybe", "true or false"),
        ("baseline_per_seed", "maybe", "true or false"),
        ("baseline_ema", "1.5", "between 0 and 1"),
    ],
)
def test_bad_values_are_refused_with_what_is_allowed(key, value, says):
    with pytest.raises(SettingsError) as error:
        get_profile("demo", {key: value})
    assert key.split("_")[0] in str(error.value) and says in str(error.value)


def test_knobs_apply_to_synthetic_data_only():
    with pytest.raises(SettingsError, match="synthetic set only"):
        get_profile("paper", {"knobs": "label_noise=0.1"})
    profile = get_profile("demo", {"knobs": "label_noise=0.1,weak_intensity_range=[0.1,0.3]"})
    knobs = profile.synthetic_knobs()
    assert knobs.label_noise == 0.1 and knobs.weak_intensity_range == (0.1, 0.3)


def test_assignments_need_an_equals_sign():
    assert parse_assignments(["seeds=1", "w_grid=0,0.6"]) == {"seeds": "1", "w_grid": "0,0.6"}
    with pytest.raises(SettingsError, match="KEY=VALUE"):
        parse_assignments(["seeds"])


def test_run_all_refuses_a_bad_setting_before_any_work(capsys):
    before = set(RUNS_DIR.glob("*")) if RUNS_DIR.exists() else set()
    assert main(["run-all", "--profile", "smoke", "--set", "seeds=0"]) == 2
    assert main(["run-all", "--profile", "smoke", "--set", "colour=blue"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("run-all: ") for line in err)
    assert "seeds" in err[0] and "baseline_epochs" in err[1]  # the second names the valid keys
    assert (set(RUNS_DIR.glob("*")) if RUNS_DIR.exists() else set()) == before


def test_overridden_runs_get_their_own_folders(tmp_path):
    default, shifted = get_profile("demo"), get_profile("demo", {"seed_offset": "100"})
    assert run_dir_for(default) == RUNS_DIR / "demo"
    assert run_dir_for(shifted) == RUNS_DIR / "demo-seed_offset_100"
    assert figures_dir_for(default, run_dir_for(default)).parts[-2:] == ("figures", "demo")
    # the demo in another folder (say, on the other precision path) keeps its figures there
    assert figures_dir_for(default, tmp_path / "demo-bf16") == tmp_path / "demo-bf16" / "figures"
    # the committed figures stay as they are
    assert figures_dir_for(shifted, tmp_path) == tmp_path / "figures"


def test_a_run_folder_keeps_its_settings(tmp_path):
    claim_run_dir(tmp_path, get_profile("smoke"))
    claim_run_dir(tmp_path, get_profile("smoke"))  # the same settings: fine
    assert json.loads((tmp_path / "settings.json").read_text())["seeds"] == PROFILES["smoke"].seeds
    with pytest.raises(SystemExit, match="differs in: seeds"):
        claim_run_dir(tmp_path, get_profile("smoke", {"seeds": "1"}))


def test_stratified_subset_keeps_the_class_shares():
    labels = np.repeat(np.arange(7), [300, 100, 50, 800, 200, 100, 450])
    index = stratified_subset(labels, 200)
    assert len(index) == 200 and np.all(np.diff(index) > 0)
    assert np.allclose(
        np.bincount(labels[index], minlength=7) / 200, np.bincount(labels) / len(labels), atol=0.01
    )
    assert len(np.unique(labels[index])) == 7
    assert np.array_equal(stratified_subset(labels, None), np.arange(len(labels)))


def _fake_run(folder, cpu, offset, baseline_oa, verdict, commit="abc1234", seeds=2):
    tables = folder / "tables"
    tables.mkdir(parents=True)
    pd.DataFrame(
        {
            "model": ["baseline", "proposed"],
            "oa_top1": [baseline_oa, baseline_oa + 0.02],
            "aa": [0.7, 0.72],
        }
    ).to_csv(tables / "table6_overall.csv", index=False)
    pd.DataFrame(
        {"seed": [offset], "RGB": [baseline_oa], "landmark only": [0.7], "fused": [0.9]}
    ).to_csv(tables / "branch_accuracy.csv", index=False)
    pd.DataFrame({"claim": ["fusion helps"], "verdict": [verdict], "detail": [""]}).to_csv(
        tables / "claims.csv", index=False
    )
    (folder / "run_info.json").write_text(
        json.dumps(
            {"cpu": cpu, "commit": commit, "source": "", "data": "synthetic RAF-DB (140, 70)"}
        )
    )
    (folder / "settings.json").write_text(json.dumps({"seed_offset": offset, "seeds": seeds}))
    return folder


def test_stability_table_says_where_two_runs_disagree(tmp_path):
    a = _fake_run(tmp_path / "a", "AMD EPYC", 0, 0.860, "supported")
    b = _fake_run(tmp_path / "b", "Intel Xeon", 100, 0.865, "supported")
    c = _fake_run(tmp_path / "c", "Intel Xeon", 100, 0.880, "contradicted")
    d = _fake_run(tmp_path / "d", "Intel Xeon", 100, 0.865, "inconclusive")
    same = replication.stability_table([a, b]).set_index("quantity")
    assert (
        same.loc["CPU", "a"] == "AMD EPYC"
        and same.loc["training seeds", "b"] == "100, 101"
        and same.loc["commit", "a"] == "abc1234"
    )
    assert (
        same.loc["baseline OA", "agree"] == "yes"
        and same.loc["claim: fusion helps", "agree"] == "same"
    )
    assert same.loc["landmark-only OA", "agree"] == "(spread 0.0000)"  # shown, not judged
    differ = replication.stability_table([a, c]).set_index("quantity")
    assert (
        differ.loc["baseline OA", "agree"].startswith("no")
        and differ.loc["claim: fusion helps", "agree"] == "conflict"
    )
    assert (
        replication.stability_table([a, d])
        .set_index("quantity")
        .loc["claim: fusion helps", "agree"]
        == "compatible"
    )
    assert main(["compare-runs", str(a), str(c), "--out", str(tmp_path / "out")]) == 1
    assert (tmp_path / "out" / "seed_stability.md").exists()


def test_compare_runs_names_an_unfinished_run(tmp_path, capsys):
    assert main(["compare-runs", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no finished report" in capsys.readouterr().err


def test_findings_mark_verdicts_that_changed_with_the_seeds(tmp_path):
    a = _fake_run(tmp_path / "a", "AMD EPYC", 0, 0.860, "supported")
    c = _fake_run(tmp_path / "c", "Intel Xeon", 100, 0.880, "contradicted")
    claims = pd.DataFrame(
        {"claim": ["fusion helps", "something else"], "verdict": ["supported", "supported"]}
    )
    marked = replication.findings(claims, replication.stability_table([a, c])).set_index("claim")[
        "same verdict with other seeds"
    ]
    assert marked["fusion helps"] == "conflict" and marked["something else"] == "not checked"
    assert (
        replication.findings(claims, None)["same verdict with other seeds"] == "not checked"
    ).all()


def test_a_replicate_is_a_run_of_the_same_commit_data_and_settings_with_other_seeds(tmp_path):
    a = _fake_run(tmp_path / "demo", "AMD EPYC", 0, 0.860, "supported")
    assert replication.replicate_of(a) is None  # nothing beside it yet
    _fake_run(tmp_path / "demo-other-commit", "AMD EPYC", 100, 0.860, "supported", commit="fff0000")
    _fake_run(tmp_path / "demo-seeds_4", "AMD EPYC", 100, 0.860, "supported", seeds=4)
    # another commit, other settings: not this run's replicate
    assert replication.replicate_of(a) is None
    b = _fake_run(tmp_path / "demo-seed_offset_100", "AMD EPYC", 100, 0.860, "supported")
    assert replication.replicate_of(a) == b and replication.replicate_of(b) == a


def test_the_paper_profile_follows_the_paper_where_it_speaks():
    paper, demo = get_profile("paper"), get_profile("demo")
    assert paper.landmark_batch_norm is False and paper.augmentation == "upstream"
    # the narrow CPU network needs it; named in the report's design choices
    assert demo.landmark_batch_norm is True
    assert get_profile("demo", {"landmark_batch_norm": "false"}).landmark_batch_norm is False
    # one baseline with the ARM recipe's own weights, as the paper; the demo averages them and
    # trains one per seed
    assert paper.baseline_per_seed is False and paper.baseline_ema is None
    assert demo.baseline_per_seed is False and demo.baseline_ema == 0.99
    assert get_profile("demo", {"baseline_ema": "none"}).baseline_ema is None


def test_run_all_refuses_a_missing_pretrained_file(tmp_path, capsys):
    assert (
        main(
            [
                "run-all",
                "--profile",
                "smoke",
                "--pretrained",
                str(tmp_path / "resnet18-f37072fd.pth"),
            ]
        )
        == 2
    )
    assert "--pretrained" in capsys.readouterr().err


def test_a_run_folder_from_before_a_new_setting_is_still_reused(tmp_path):
    older = {
        k: v
        for k, v in get_profile("demo").settings().items()
        if k not in ("augmentation", "landmark_batch_norm")
    }
    (tmp_path / "settings.json").write_text(json.dumps(older))
    # the demo's values of the new settings are their defaults
    claim_run_dir(tmp_path, get_profile("demo"))
    with pytest.raises(SystemExit, match="augmentation"):
        claim_run_dir(tmp_path, get_profile("demo", {"augmentation": "upstream"}))


def test_the_learning_rate_schedule_is_a_setting():
    assert get_profile("paper").lr_schedule == "exponential"  # the paper's recipe stays
    assert get_profile("demo", {"lr_schedule": "exponential"}).lr_schedule == "exponential"
    with pytest.raises(SettingsError, match="expected one of exponential, cosine"):
        get_profile("demo", {"lr_schedule": "onecycle"})
