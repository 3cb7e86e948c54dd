"""The two ways edgekit fails, each with its exit code (see ARCHITECTURE.md), and how it warns."""
import sys


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
