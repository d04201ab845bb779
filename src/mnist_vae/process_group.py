"""A child command in a process group of its own, which ends whole whichever side dies first.

Why: Ray starts a dozen processes beside its driver (GCS, raylet, agents, workers) and some of
them outlive a driver killed with SIGKILL, re-parented to PID 1 and ignoring SIGTERM. So
``vae sweep`` runs its Ray driver as a child in a new process group: when the child ends (or
is killed), the parent ends every process left in the group; when the parent is killed, the
kernel sends the child SIGTERM (Linux's parent-death signal), and the child shuts Ray down and
ends its group itself. Interrupts the parent receives are passed on to the child.
"""

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
GRACE_SECONDS = 3.0  # between SIGTERM and SIGKILL for what is left of a group


def run(command, env=None):
    """Run ``command`` in a new process group; returns (exit status, whether a signal was passed on).

    The status is the child's, or 128 + N when signal N ended it, as a shell reports it.
    """
    parent = os.getpid()
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform.startswith("linux") else None

    def start_child():  # runs in the child between fork and exec: nothing here may start a process
        os.setpgid(0, 0)
        if libc is not None:  # SIGTERM when the parent dies; exit at once if it already has
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)

    forwarded = []
    proc = subprocess.Popen(command, env=env, preexec_fn=start_child)

    def forward(signum, frame):
        forwarded.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        try:
            status = proc.wait()  # retried by Python after each forwarded signal (PEP 475)
        finally:
            end_group(proc.pid)  # still forwarding: a second Ctrl-C must not cut the clean-up short
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return (128 - status if status < 0 else status), bool(forwarded)


def end_group(pgid, spare=None):
    """SIGTERM every live process of group ``pgid`` (but ``spare``), then SIGKILL what is left after a grace period."""
    members = _members(pgid, spare)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while members and time.monotonic() < deadline:
        time.sleep(0.05)
        members = _members(pgid, spare)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def end_own_group():
    """In a child that ``run`` started: end the rest of its group (call it last, after a clean shutdown)."""
    if os.getpgrp() == os.getpid():
        end_group(os.getpid(), spare=os.getpid())


def _members(pgid, spare=None):
    """Live (not zombie) processes of group ``pgid``, from /proc; elsewhere the group's leader if alive."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
            return [pgid] if pgid != spare else []
        except (ProcessLookupError, PermissionError):
            return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == spare:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found
