"""Child of bench/run.py that starts the measured commands and reports their rusage.

Why a separate process: on Linux the ``ru_maxrss`` that ``wait4`` reports for a child
includes the resident size its parent had when it forked (the high-water mark of the
pre-exec address space is kept across ``execve``).  Started from the harness, which
holds the generated sources of the big synthetic programs, every measurement would
report at least the harness's size.  This process stays small (about 10 MB), so the
floor is that of a bare interpreter; run.py measures it (``/bin/true``) and reports it.

Protocol: one JSON object per line on stdin, answered by two lines on stdout:
request ``{"cmd", "cwd", "env", "stdout", "stderr", "timeout"}`` (stdout/stderr: file
paths or null), then ``{"pid": N}`` as soon as the command runs, then ``{"wall_s",
"status", "rc", "utime", "stime", "maxrss_kb", "timed_out"}`` when it has exited.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time


def serve() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        out = open(req["stdout"], "wb") if req.get("stdout") else subprocess.DEVNULL  # noqa: SIM115
        err = open(req["stderr"], "wb") if req.get("stderr") else subprocess.DEVNULL  # noqa: SIM115
        timed_out = [False]
        try:
            t0 = time.perf_counter()
            p = subprocess.Popen(req["cmd"], cwd=req.get("cwd"), env=req.get("env"), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=err, start_new_session=True)
            sys.stdout.write(json.dumps({"pid": p.pid}) + "\n")
            sys.stdout.flush()

            def kill(pid: int = p.pid, flag: list = timed_out) -> None:
                flag[0] = True
                try:
                    os.killpg(pid, signal.SIGKILL)  # the process group of the command we started
                except ProcessLookupError:
                    pass

            timer = threading.Timer(float(req.get("timeout") or 3600), kill)
            timer.start()
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t0
            timer.cancel()
            p.returncode = os.waitstatus_to_exitcode(status)
            res = {"wall_s": wall, "rc": p.returncode, "utime": ru.ru_utime, "stime": ru.ru_stime,
                   "maxrss_kb": ru.ru_maxrss, "timed_out": timed_out[0]}
        except OSError as exc:
            res = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for f in (out, err):
                if f is not subprocess.DEVNULL:
                    f.close()
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
