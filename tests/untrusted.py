"""Running untrusted-file cases in a child process: its peak memory growth and time, measured.

``run_isolated(code)`` runs ``code`` (Python source; ``gpunet`` and ``numpy as np`` already imported) in
a fresh interpreter and returns ``Outcome(returncode, stdout, stderr, rss_growth_mb, seconds)``: the
growth of the child's peak resident memory over its resident memory just before ``code`` ran, and the
wall time of ``code`` alone. The peak is Linux's ``VmHWM`` of the child itself, reset before ``code``
(``/proc/self/clear_refs``); not ``ru_maxrss``, which a child inherits from its parent's peak across
fork and exec, so that under a large pytest process it would hide any growth below that peak. The child prints ``RESULT <json>`` as its last stdout line; ``code`` can set
``result`` (any JSON value) to return something.
"""
import collections
import json
import os
import subprocess
import sys

Outcome = collections.namedtuple("Outcome", "returncode stdout stderr rss_growth_mb seconds result")

_PROLOGUE = """
import json, resource, sys, time
import numpy as np
import gpunet
result = None
def _status_kb(key):
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))
try:
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')                  # the peak (VmHWM) starts again from the current RSS
    _base, _peak_now = _status_kb('VmRSS:'), lambda: _status_kb('VmHWM:')
except OSError:                       # no /proc: the inherited ru_maxrss (growth under it is missed)
    _peak_now = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _base = _peak_now()
_t0 = time.perf_counter()
"""
_EPILOGUE = """
_dt = time.perf_counter() - _t0
print("RESULT " + json.dumps({"rss_kb": _peak_now() - _base, "seconds": _dt, "result": result}))
"""


def run_isolated(code: str, timeout: float = 120, env=None) -> Outcome:
    body = "try:\n" + "".join("    " + line + "\n" for line in code.strip().splitlines()) + \
        "except BaseException as _exc:\n    result = {'error': type(_exc).__name__, 'message': str(_exc)}\n"
    source = _PROLOGUE + body + _EPILOGUE
    child_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout,
                          env=child_env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        return Outcome(proc.returncode, proc.stdout, proc.stderr, None, None, None)
    data = json.loads(lines[-1][len("RESULT "):])
    return Outcome(proc.returncode, proc.stdout, proc.stderr, data["rss_kb"] / 1024, data["seconds"], data["result"])
