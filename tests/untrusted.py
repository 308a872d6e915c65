"""Running untrusted-file cases in a child process: its peak memory growth and time, measured.

``run_isolated(code)`` runs ``code`` (Python source; ``gpunet`` and ``numpy as np`` already imported) in
a fresh interpreter and returns ``Outcome(returncode, stdout, stderr, rss_growth_mb, seconds)``: the
growth of the child's peak resident memory (``ru_maxrss``) over its peak just before ``code`` ran, and the
wall time of ``code`` alone. The child prints ``RESULT <json>`` as its last stdout line; ``code`` can set
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
_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
_t0 = time.perf_counter()
"""
_EPILOGUE = """
_dt = time.perf_counter() - _t0
_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"rss_kb": _peak - _base, "seconds": _dt, "result": result}))
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
