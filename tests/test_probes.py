"""The linear probes give the same numbers run to run, whatever threads the process was given."""

import json
import os
import subprocess
import sys

import numpy as np

from fer_lib import probes

SCRIPT = """
import json, sys
import numpy as np
from fer_lib import probes
rng = np.random.default_rng(0)
x = rng.normal(size=(350, 40)).astype(np.float32)
y = (x[:, :7] + rng.normal(scale=2.0, size=(350, 7))).argmax(1)
model = probes.fit_probe(0.1, x[:300], y[:300])
result = probes.linear_probe("t", x[:300], y[:300], x[300:], y[300:])
print(json.dumps({"coef": model[-1].coef_.tobytes().hex(), "test": result.test_accuracy, "val": result.validation_accuracy,
                  "predicted": result.test_predicted.tolist()}))
"""


def _fit_in_process(threads: int) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_probe_fitted_twice_gives_identical_numbers():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 40)).astype(np.float32)
    y = (x[:, :7] + rng.normal(scale=2.0, size=(300, 7))).argmax(1)
    first, second = probes.fit_probe(0.1, x, y), probes.fit_probe(0.1, x, y)
    assert first[-1].coef_.tobytes() == second[-1].coef_.tobytes()
    # in fresh processes with one and with two BLAS/OpenMP threads: the same bytes
    assert _fit_in_process(1) == _fit_in_process(2)
