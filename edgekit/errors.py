"""The two ways edgekit fails, each with its exit code (see ARCHITECTURE.md), and how it warns."""
import signal
import sys
import threading


def warn(message: str) -> None:
    """One line on stderr: edgekit's own warnings show even where library warnings are hidden."""
    sys.stderr.write(f"edgekit: warning: {message}\n")


class UsageError(Exception):
    """Bad usage or input: exit 2. The message names the problem and the fix, in one line."""
    exit_code = 2


class WorkError(Exception):
    """The work itself failed (validation mismatch, board error): exit 1."""
    exit_code = 1


class InternalError(WorkError):
    """edgekit itself went wrong (a broken invariant): exit 1, nothing half-made is kept."""


# A signal that comes while a library runs Python called back from its C++ must not be raised there: an
# import of a C extension (protobuf's, under onnx) then crashes the process before any `finally` runs, and
# TVM turns the exception into its own error, or swallows it and goes on with half a result (seen: a build
# that then emitted C naming a constant it never defined). The CLI's handler records every signal here and
# raises it only in edgekit's own code; edgekit's stages call checkpoint() between steps, so a deferred or
# swallowed interrupt still ends the work before it commits.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PENDING_SIGNALS: list[int] = []


def interrupt() -> None:
    """End the work: from now on signals are ignored (in the main thread), so the clean-up runs to the end."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt


def checkpoint() -> None:
    """Raise KeyboardInterrupt if a signal came and has not ended the work yet."""
    if PENDING_SIGNALS:
        interrupt()


def checkpointed(stage):
    """A stage callback (build's progress lines) that is also a checkpoint: every step of the pipeline is one."""
    def checked(step: str) -> None:
        checkpoint()
        stage(step)
    return checked
