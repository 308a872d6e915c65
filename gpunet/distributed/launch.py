"""The ``mpiexec`` command line that launches N ranks (MPICH's hydra or Open MPI)."""
from __future__ import annotations

import os
import shutil
import sys

from ..errors import DistributedUnavailableError
from .context import INSTALL_HINT

OPEN_MPI_SLOTS_PER_HOST = 64     # Open MPI refuses more ranks than slots; allow this many per host


def mpiexec_command(n: int, hosts: str | None = "127.0.0.1") -> list:
    """``[mpiexec, -n, N, ...]`` to launch ``n`` ranks (on ``hosts``; ``None``: MPI's default).

    Prefers the ``mpiexec`` next to this Python (a virtual environment with ``pip install
    mpich``), then the one on ``PATH``. Raises DistributedUnavailableError when there is none.
    """
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    exe = here if os.access(here, os.X_OK) else shutil.which("mpiexec") or shutil.which("mpirun")
    if exe is None:
        raise DistributedUnavailableError(f"no mpiexec/mpirun found next to {sys.executable} or on PATH; "
                                          f"{INSTALL_HINT}")
    cmd = [exe, "-n", str(int(n))]
    if hosts:
        cmd += _host_args(exe, hosts)
    return cmd


def _host_args(exe, hosts):
    """MPICH's hydra takes ``-hosts``; Open MPI takes ``--host`` with slots (and, as root, needs leave)."""
    try:
        import subprocess
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except Exception:
        version = ""
    names = hosts.split(",")
    if "Open MPI" in version or "OpenRTE" in version:
        args = ["--host", ",".join(f"{h}:{OPEN_MPI_SLOTS_PER_HOST}" for h in names)]
        if all(h in ("127.0.0.1", "localhost") for h in names):
            args += ["--mca", "btl_tcp_if_include", "lo"]               # no other interface
        return args + (["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])
    return ["-hosts", hosts]
