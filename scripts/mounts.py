"""Mounts for the scripts (soak, benchmarks): `revfs mount` in the
foreground as a child of the script, waited for with a timeout, ended by
its PID (never by name), and always unmounted."""
import os
import signal
import subprocess
import time


def is_mounted(path):
    with open("/proc/self/mounts") as f:
        return any(l.split(" ")[1] == path for l in f)


class Daemon:
    """`revfs mount` in the foreground as our child; crash() or stop()."""

    def __init__(self, bin, store, mnt, *extra):
        os.makedirs(mnt, exist_ok=True)
        self.mnt = mnt
        self.log = open(mnt + ".log", "ab")
        # A session of its own, as users run it (`revfs mount --daemon`, fstab,
        # systemd): with kernel.sched_autogroup_enabled=1 a daemon in the
        # benchmark's session shares its scheduler group with the writer, and
        # the create loop measured 2440-2569 files/s so against 4073-4698 in
        # its own session (20k creates, alternating rounds, 2026-12-06).
        self.p = subprocess.Popen([bin, "mount", store, mnt, *extra],
                                  stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                  start_new_session=True)
        deadline = time.time() + 30
        while not is_mounted(mnt):
            if self.p.poll() is not None:
                raise RuntimeError(f"mount exited {self.p.returncode}: {open(mnt + '.log').read()[-500:]}")
            if time.time() > deadline:
                raise RuntimeError("no mount after 30 s")
            time.sleep(0.02)

    def crash(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=30)
        subprocess.run(["umount", "-l", self.mnt], capture_output=True)

    def stop(self):
        if self.p.poll() is None:
            subprocess.run(["umount", self.mnt], capture_output=True)
            try:
                self.p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.crash()
        if is_mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        if self.p.returncode not in (0, -9):
            raise RuntimeError(f"daemon exited {self.p.returncode}")
