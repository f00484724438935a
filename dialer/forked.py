"""What a process forked by the dialer does first: die with its parent, drop its parent's locks.

Two kinds of child are forked: the phone-parsing workers (dialer/phones.py) and the
reader of a big workbook (dialer/workbook.py). Both inherit every descriptor, the
campaign's flock among them, and neither must outlive a parent killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import threading
import time

# prctl(2) option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1
# A lock taken with flock() or as an open-file-description lock belongs to the
# open file, which fork shares with the child: as long as any child keeps its
# copy of the descriptor open, the lock outlives the process that took it.
_SHARED_LOCKS = ("FLOCK", "OFDLCK")


def prepare_child(parent: int) -> None:
    """Prepare a forked child: die with the parent, hold none of its locks, leave Ctrl-C to it."""
    _die_with(parent)
    _close_inherited_locks()
    # Ctrl-C goes to the whole process group; the parent alone decides what to
    # do (it stops the pool), and a SIGTERM handler inherited by fork must not
    # keep a child alive.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _die_with(parent: int) -> None:
    """Make sure this child does not outlive `parent`, even when it is killed with SIGKILL.

    A killed parent runs no clean-up: without this its workers would wait on
    the task queue forever (each holds the queue's write end too, so no EOF comes).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was armed
    if not armed:
        # No prctl: watch for the parent's death (the worker is re-parented).
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _close_inherited_locks() -> None:
    """Close every descriptor through which this process shares a file lock with its parent.

    The campaign lock is an flock taken before the import: a worker holding a
    copy would keep it after the run died, and every later run would exit 75.
    Only this process's copies are closed; the parent's lock is untouched (no
    unlock is done, which would release it for the parent too).
    """
    try:
        fds = os.listdir("/proc/self/fdinfo")
    except OSError:
        return  # no /proc: workers are forked on Linux only (see _can_fork)
    for name in fds:
        try:
            with open(f"/proc/self/fdinfo/{name}", encoding="ascii") as info:
                locks = [line.split()[2] for line in info if line.startswith("lock:")]
        except (OSError, IndexError):
            continue  # the descriptor listing itself, closed meanwhile
        if any(kind in _SHARED_LOCKS for kind in locks):
            os.close(int(name))
