"""Kernels for the report's notebooks, each started one notebook ahead.

Every notebook runs in a fresh kernel, and a fresh kernel spends seconds starting and importing
torch, matplotlib, pandas and this library before its first cell does any work (about 8 s a notebook
on a 2-core CPU). While one notebook runs, mostly on one core, ``WarmKernels`` starts the next
notebook's kernel on the other and has it import what every notebook imports, so that the next
notebook starts at once. A warm kernel is still a fresh one: it has run the imports only, silently
(no execution count, no output), never a cell of another notebook.

papermill (through nbclient) creates its kernel manager from a class; ``WarmKernels.manager_class``
hands it the warm kernel when one is ready, which nbclient then uses, and shuts down, as one it
started itself.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from jupyter_client.manager import KernelManager

# What the notebooks import, directly or through the library: loaded into sys.modules without
# binding a name (a notebook that forgot an import still fails, as it would in JupyterLab)
WARM_MODULES = (
    "matplotlib.pyplot",
    "pandas",
    "seaborn",
    "torch",
    "torchvision.models",  # 2 s; the library imports it where a model is built (notebooks 03-10)
    "scipy.stats",
    "fer_lib.run.experiment",
    "fer_lib.run.notebook",
    "fer_lib.report.tables",
    "fer_lib.report.figures",
)
WARM_IMPORTS = f"for _module in {WARM_MODULES!r}:\n    __import__(_module)\ndel _module\n"
PIPELINE_KERNEL = "python3"  # this environment's own kernel
READY_SECONDS = 120


class EncryptedKernelManager(KernelManager):
    """Provisions CurveZMQ keys where the kernel supports them (ipykernel >= 7.3): the
    kernel then runs encrypted and does not print its "running over TCP without encryption"
    warning for every notebook."""

    transport_encryption = "auto"


def _import_warm_modules(manager: KernelManager) -> None:
    """Run ``WARM_IMPORTS`` silently in the started kernel and wait for it to finish."""
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=READY_SECONDS)
        request = client.execute(WARM_IMPORTS, silent=True, store_history=False)
        # an import that fails fails again, visibly, in the notebook's own first cell
        while client.get_shell_msg(timeout=READY_SECONDS)["parent_header"].get("msg_id") != request:
            pass
    finally:
        client.stop_channels()


class WarmKernels:
    """At most one kernel started ahead, in a background thread, in the notebooks' working folder,
    with ``env`` on top of this process's environment."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.cwd, self.env = Path(cwd), dict(env)
        self._thread: threading.Thread | None = None
        self._warm: KernelManager | None = None

    def start_next(self) -> None:
        """Start a kernel for the next notebook, unless one is already started."""
        if self._thread is None and self._warm is None:
            self._thread = threading.Thread(target=self._start, name="warm-kernel", daemon=True)
            self._thread.start()

    def _start(self) -> None:
        manager = EncryptedKernelManager(kernel_name=PIPELINE_KERNEL)
        try:
            manager.start_kernel(cwd=str(self.cwd), env={**os.environ, **self.env})
            _import_warm_modules(manager)
        except Exception:  # noqa: BLE001 - a kernel that did not warm up is shut down; the notebook starts its own
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)
            return
        self._warm = manager

    def take(self) -> KernelManager | None:
        """The warm kernel (waiting for it to finish warming up), or None when none was started."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        warm, self._warm = self._warm, None
        return warm

    def manager_class(self, ahead: bool) -> type[KernelManager]:
        """A kernel manager class for papermill: an instance is the warm kernel if there is one
        (nbclient sees a started kernel and does not start another), else a new manager whose
        kernel nbclient starts; with ``ahead``, the next notebook's kernel starts warming up."""
        pool = self

        class Warm(EncryptedKernelManager):
            def __new__(cls, *args, **kwargs):
                warm = pool.take()
                if ahead:
                    pool.start_next()
                return warm if warm is not None else super().__new__(cls, *args, **kwargs)

        return Warm

    def close(self) -> None:
        """Shut down a kernel started ahead that no notebook used."""
        warm = self.take()
        if warm is not None:
            warm.shutdown_kernel(now=True)
