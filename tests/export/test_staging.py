"""The export's staging folder: a killed export's leftovers are removed by the next export into the same folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from lightseg_edge.export.staging import STAGING_PREFIX, Staging as _Staging


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has this pid now (pids are not reused this quickly)


def _leftover(out, name, owner=None, age_s=0.0):
    d = out / f"{STAGING_PREFIX}{name}"
    d.mkdir(parents=True)
    (d / "model.onnx").write_bytes(b"half-written")
    if owner is not None:
        (d / ".owner").write_text(owner)
    if age_s:
        t = time.time() - age_s
        os.utime(d, (t, t))
    return d


def test_abandoned_staging_is_removed_and_live_ones_kept(tmp_path):
    host = socket.gethostname()
    dead = _leftover(tmp_path, "dead", f"{host} {_dead_pid()}\n")
    alive = _leftover(tmp_path, "alive", f"{host} {os.getpid()}\n")
    other_host = _leftover(tmp_path, "elsewhere", f"not-{host} {_dead_pid()}\n")
    old_unowned = _leftover(tmp_path, "old", age_s=2 * 24 * 3600)
    new_unowned = _leftover(tmp_path, "new")
    with _Staging(tmp_path) as staging:
        assert (staging.root / ".owner").read_text().split() == [host, str(os.getpid())]
        assert not dead.exists() and not old_unowned.exists()
        assert alive.exists() and other_host.exists() and new_unowned.exists()
    assert not staging.dir.exists()  # its own staging folder goes when the export ends
