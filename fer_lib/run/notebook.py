"""What every report notebook does first: check its papermill parameters, find the data and the run
folder.

Each notebook has one cell tagged ``parameters`` with the names in ``PARAMETERS``; papermill injects
overrides in a cell after it. ``start(globals())`` refuses unknown or mistyped parameters (papermill
itself does not), resolves the defaults, and returns an ``Experiment``. Notebooks therefore keep
UPPER_CASE names for parameters only: an imported ``CLASSES`` would be refused as an unknown
parameter (and the data set's class list is ``ex.classes`` anyway, 8 classes for a converted
AffectNet).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fer_lib.io import PROJECT_ROOT, relative
from fer_lib.run.experiment import Experiment
from fer_lib.run.pipeline import (
    PARAMETER_ENV,
    PATH_SEPARATOR,
    claim_run_dir,
    ensure_data,
    figures_dir_for,
    run_dir_for,
)
from fer_lib.run.profiles import get_profile

PARAMETERS = {
    "PROFILE": str,  # smoke / demo / paper
    # JSON {"key": "value"} of profile overrides (run_all.sh --set); "" = the profile as defined
    "SETTINGS": str,
    # paths: absolute, or relative to the project (not to notebooks/)
    "DATA_ROOT": str,  # RAF-DB basic/ folder; "" = the profile's synthetic set under RUN_DIR/data
    "RUN_DIR": str,  # where checkpoints, predictions and tables go; "" = runs/<PROFILE>
    "BASELINE_CHECKPOINT": str,  # the ARM authors' epoch59_acc0.9205.pth; "" = train the baseline
    # torchvision's resnet18-f37072fd.pth to start a trained baseline from; "" = random init
    "PRETRAINED": str,
    "FIGURES_DIR": str,  # "" = figures/ (demo and paper) or RUN_DIR/figures (smoke)
    # other data sets (RAF-DB's layout or converted) to test the run's
    # models on, notebook 09; "" = none
    "CROSS_DATA": str,  # paths separated by PATH_SEPARATOR
}


def check_parameters(namespace: dict) -> dict:
    """The notebook's parameters, after refusing any UPPER_CASE name that
    is not a known parameter."""
    unknown = sorted(
        k for k in namespace if k.isupper() and not k.startswith("_") and k not in PARAMETERS
    )
    if unknown:
        raise ValueError(
            f"unknown notebook parameter(s) {unknown}; the parameters are {sorted(PARAMETERS)}"
        )
    values = {}
    for name, kind in PARAMETERS.items():
        if name not in namespace:
            raise ValueError(f"parameter {name} is missing from the notebook's parameters cell")
        value = namespace[name]
        if not isinstance(value, kind):
            raise TypeError(f"parameter {name} must be a {kind.__name__}, got {value!r}")
        values[name] = value
    for name in PATH_PARAMETERS:
        values[name] = _resolve_path(name, values[name])
    values["CROSS_DATA"] = _resolve_path_list("CROSS_DATA", values["CROSS_DATA"])
    values["profile"] = get_profile(values["PROFILE"], _settings(values["SETTINGS"]))
    return values


PATH_PARAMETERS = ("DATA_ROOT", "RUN_DIR", "BASELINE_CHECKPOINT", "PRETRAINED", "FIGURES_DIR")


def _resolve_path(name: str, value: str) -> str:
    """A path parameter as the kernel uses it: "" stays empty; a path relative to the project (what
    run_all.sh writes for paths inside it) is made absolute; a placeholder such as ``<data_root>``
    (a path outside the project) is read from the environment variable run_all.sh set for it."""
    if not value:
        return ""
    if value.startswith("<") and value.endswith(">"):
        if PARAMETER_ENV + name not in os.environ:
            raise ValueError(
                f"parameter {name} is the placeholder {value}, which run_all.sh fills from the "
                f"environment variable {PARAMETER_ENV + name}; set {name} to the path itself to "
                "run this notebook alone"
            )
        return os.environ[PARAMETER_ENV + name]
    return str(PROJECT_ROOT / value) if not Path(value).is_absolute() else value


def _resolve_path_list(name: str, value: str) -> list[str]:
    """A parameter of several paths (``PATH_SEPARATOR`` between them), each resolved as
    ``_resolve_path`` does; a placeholder stands for the whole list, which its
    environment variable holds."""
    if value.startswith("<") and value.endswith(">"):
        value = _resolve_path(name, value)
    return [
        _resolve_path(name, item.strip()) for item in value.split(PATH_SEPARATOR) if item.strip()
    ]


def _settings(text: str) -> dict[str, str]:
    if not text.strip():
        return {}
    try:
        settings = json.loads(text)
    except ValueError as error:
        raise ValueError(
            f"parameter SETTINGS must be a JSON object of profile overrides, got {text!r} ({error})"
        ) from None
    if not isinstance(settings, dict):
        raise ValueError(
            f"parameter SETTINGS must be a JSON object of profile overrides, got {text!r}"
        )
    return {str(k): str(v) for k, v in settings.items()}


def start(namespace: dict, *, needs_previous: str | None = None) -> Experiment:
    """Check the parameters and return the profile's Experiment (data generated on first use).
    ``needs_previous``: the notebook that normally trains what this one reads; named when it has
    not run yet (this notebook then trains the missing pieces itself)."""
    values = check_parameters(namespace)
    profile = values["profile"]
    run_dir = Path(values["RUN_DIR"]) if values["RUN_DIR"] else run_dir_for(profile)
    run_dir.mkdir(parents=True, exist_ok=True)
    claim_run_dir(run_dir, profile)
    data_root = ensure_data(profile, values["DATA_ROOT"] or None, run_dir)
    experiment = Experiment(
        profile,
        data_root,
        run_dir,
        values["BASELINE_CHECKPOINT"] or None,
        pretrained=values["PRETRAINED"] or None,
        figures_dir=values["FIGURES_DIR"] or figures_dir_for(profile, run_dir),
        cross_data=tuple(values["CROSS_DATA"]),
    )
    for warning in (experiment.baselines.warning(), experiment.baselines.holdout_warning()):
        if warning:
            print(warning)
    trained = (run_dir / "baseline").exists() or experiment.baseline_checkpoint is not None
    if needs_previous and not trained:
        print(
            f"note: no baseline in {relative(run_dir)} yet; {needs_previous} trains it. Training "
            "it here instead."
        )
    print(
        experiment.profile.describe(None if experiment.on_synthetic_data else experiment.data_label)
    )
    if overrides := experiment.profile.overrides():
        changed = ", ".join(f"{k}={v}" for k, v in overrides.items())
        print(f"settings changed from the profile (--set): {changed}")
    print(f"data: {experiment.data_label}")
    return experiment
