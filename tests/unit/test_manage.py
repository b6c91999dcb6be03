import subprocess
import time

import psutil

from bootc_box.manage import wait_gone


def test_a_zombie_has_ended() -> None:
    """A supervisor whose parent never reaps it (PID 1 is `sleep infinity`)
    stays a zombie; stop must not wait for it to vanish."""
    child = subprocess.Popen(["true"])
    process = psutil.Process(child.pid)
    while process.status() != psutil.STATUS_ZOMBIE:  # not reaped: we never wait() for it
        time.sleep(0.01)
    try:
        assert wait_gone(process, timeout=5.0)
    finally:
        child.wait()


def test_a_live_process_has_not_ended() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not wait_gone(psutil.Process(child.pid), timeout=0.3)
    finally:
        child.kill()
        child.wait()
