"""The one error type users see.

An :class:`NbsandboxError` carries a single line that says what is wrong and
what to do about it.  Front ends print it as is (the CLI as
``nbsandbox: error: ...`` with a non-zero exit, the magics as a ``UsageError``).
"""

from __future__ import annotations


class NbsandboxError(Exception):
    """A user-facing failure, explained in one line.

    ``exit_code`` is what the command line exits with (2 for bad usage,
    1 for anything else).
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(NbsandboxError):
    """The request itself is malformed (unknown engine, conflicting flags...)."""

    exit_code = 2


class PolicyError(UsageError):
    """A setting or a request that the policy forbids (one line, names the setting)."""


class StoreError(NbsandboxError):
    """A store root is missing, empty, or inconsistent."""


class ElfError(NbsandboxError):
    """A file is not a readable ELF file (or not the ELF file expected)."""


class EngineUnavailable(NbsandboxError):
    """An explicitly requested engine cannot run here (or cannot run this program)."""


class PackError(NbsandboxError):
    """Building or unpacking a pack failed."""
