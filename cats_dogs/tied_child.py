"""A child process that cannot outlive its parent: the page's engine build (engine_build.start_build_process).

The page suspends its build (SIGSTOP) while it answers. A stopped process acts on no signal but SIGKILL, so a
child whose parent dies while it is stopped would stay stopped for good, holding its memory (seen: 680 MB, state
T, minutes after its page had gone). On Linux the child asks the kernel for SIGKILL when its parent dies
(PR_SET_PDEATHSIG), which reaches a stopped process too. It must ask before anything slow: asked after importing
torch (seconds), a page killed in that window left it behind. So the child is started as

    python -m cats_dogs.tied_child <parent pid> <module> <its arguments>

which, importing nothing but the standard library, asks for the signal, checks that its parent is still the one
that started it (a parent that died before the ask would not be signalled), says ARMED on stdout, and only then
runs the module. The parent suspends the child only after reading ARMED (wait_until_armed).

The death signal follows the thread that started the child, not the process: when that thread ends, the child is
killed. The page starts the build from the thread that waits for it, so that thread lives as long as the child.

Other systems have no death signal. macOS: the parent check alone; a page that exits (Ctrl-C, SIGTERM) resumes its
build on the way out (PausedWhileAnswering.release), and the build then finishes at the lowest priority, writes the
engine and exits; a page killed with SIGKILL while its build is suspended leaves it suspended. Windows: psutil
suspends the build's threads (there are no signals); the same holds: Ctrl-C resumes it to finish, closing the console
window ends both, a page ended from the Task Manager while its build is suspended leaves it suspended (end the
`python … cats_dogs.engine_build` there too). A Job object with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE would end it with
the page; it is not done here, where it could not be tested.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import subprocess
import sys

ARMED = "armed: ends with its parent"  # the child's first line, once its death signal is set
PR_SET_PDEATHSIG = 1  # from linux/prctl.h


def tied_command(module: str, *arguments: str) -> list[str]:
    """The command line that runs `python -m module arguments…` tied to this process."""
    return [sys.executable, "-m", "cats_dogs.tied_child", str(os.getpid()), module, *arguments]


def wait_until_armed(process: subprocess.Popen) -> None:
    """Read the child's first line (its stdout must be a text pipe): after it, the child ends with this process.
    A child that exits first (its parent was gone) leaves an empty line; its exit code says the rest."""
    first = process.stdout.readline().strip()
    if first and first != ARMED:
        raise RuntimeError(f"{process.args[4]}: expected {ARMED!r} first, got {first!r}")


def main() -> None:
    parent, module, arguments = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the ask: nobody is left to wait for this
        sys.exit(3)
    print(ARMED, flush=True)
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
