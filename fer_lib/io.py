"""Atomic writes: a file is written next to its target and renamed over it, so an interrupted run
never leaves a half-written checkpoint, table or cache behind (the previous version stays intact).
And ``relative``: how a path is shown in anything shared."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fer_lib.settings import OLDER_RUNS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Set by the pipeline for the notebook kernels it runs: no one is behind the page to use
# a widget (fer_lib.apps.explore)
BATCH_REPORT_ENV = "FER_BATCH_REPORT"


def relative(path: str | os.PathLike) -> str:
    """A path as shown in anything shared (notebooks, HTML, tables, messages): relative
    to the project when inside it, else ``<outside the project>/name``, so no absolute
    path of the machine is written."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return f"<outside the project>/{path.name}"


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as handle:
        temporary = Path(handle.name)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def save_torch(obj, path: str | os.PathLike) -> Path:
    return write_atomic(path, lambda tmp: torch.save(obj, tmp))


def save_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def save_json(obj, path: str | os.PathLike) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2)))


def save_text(text: str, path: str | os.PathLike) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_npy(array: np.ndarray, path: str | os.PathLike) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    return write_atomic(path, write)


def older_runs_value(field: dataclasses.Field):
    """What a run saved before ``field`` existed used: the field's ``older_runs`` metadata where its
    default has moved since, else its default."""
    return field.metadata.get(OLDER_RUNS, field.default)


def fill_older_fields(cls, saved: dict) -> dict:
    """``saved`` (a dataclass ``cls`` read back from JSON or a checkpoint) with each field it lacks
    set to the value older runs used (``older_runs_value``)."""
    missing = {
        f.name: older_runs_value(f)
        for f in dataclasses.fields(cls)
        if f.name not in saved and older_runs_value(f) is not dataclasses.MISSING
    }
    return {**json.loads(json.dumps(missing)), **saved}


def claim_config(path: str | os.PathLike, config) -> list[str]:
    """Write the dataclass ``config`` to ``path`` as JSON if it is missing; otherwise the
    fields whose saved value differs. A field missing from the file (added after the run was
    made) counts as the value older runs used (``older_runs_value``). An empty list means
    the run folder may be reused."""
    path = Path(path)
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))
    if not path.exists():
        save_json(wanted, path)
        return []
    found = fill_older_fields(type(config), json.loads(path.read_text()))
    return sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
