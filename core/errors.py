"""The one error hierarchy of npueval, and the CLI's exit codes (docs/design.md, "Errors").

Every message names the file, flag or device at fault and says what to do; the CLI
prints it on one line without a traceback.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_RUN_FAILURE = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class NpuevalError(Exception):
    """Base of every error npueval raises on purpose."""

    exit_code = EXIT_RUN_FAILURE


class UserError(NpuevalError):
    """Bad input, flags or files: the user can fix it (exit 2)."""

    exit_code = EXIT_USER_ERROR


class CorpusError(UserError):
    """A corpus file or line that cannot be read as wiki_zh JSON lines."""


class VocabError(UserError):
    """A vocab.txt that is missing or lacks the tokens the protocol needs."""


class CheckpointError(UserError):
    """A checkpoint folder that cannot be used as it is."""


class DatasetError(UserError):
    """An output or data folder that holds something other than what was asked for."""


class RunError(NpuevalError):
    """A device, block or stage that kept failing (exit 1)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`ray job stop`, a scheduler, `kill`), raised where Ctrl-C's KeyboardInterrupt would
    be (core/signals.py), so that it unwinds the same way: finished work kept, temporaries removed."""


class Interrupted(NpuevalError):
    """Ctrl-C (exit 130) or SIGTERM (exit 143) during a run: what was finished is kept."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, by: BaseException | None = None):
        super().__init__(message)
        self.exit_code = interrupted_exit_code(by)


def interrupted_exit_code(by: BaseException | None) -> int:
    return EXIT_TERMINATED if isinstance(by, Terminated) else EXIT_INTERRUPTED


def interrupted_by(by: BaseException | None) -> str:
    """How a message says what stopped the command: "interrupted", or "interrupted (SIGTERM)"."""
    return "interrupted (SIGTERM)" if isinstance(by, Terminated) else "interrupted"


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message ("" if it has none)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


def root_cause(exc: BaseException) -> str:
    """A failure on one line: the type and first line of the exception that started it, taken out
    of Ray's wrappers (a RayTaskError's `cause` is the actor's own exception)."""
    cause = getattr(exc, "cause", None)
    while isinstance(cause, BaseException):
        exc, cause = cause, getattr(cause, "cause", None)
    text = first_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun` for a message, the noun singular for one: "1 device", "4 devices"."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def not_a_folder(path: Path) -> str:
    """Why `path` cannot be opened as a folder, for a message: it is a file, or nothing is there."""
    return "a file, not a folder" if Path(path).exists() else "no such folder"
