"""Problems found in policy and secrets files, located as ``file:line``.

Every check of the policy package reports a :class:`Problem` (an error, or a warning that
does not stop the file from being used) instead of raising, so that one run lists every
problem of a file. :class:`PolicyError` carries problems where an exception is needed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """A place in a file; ``line`` 0 means the file as a whole."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line > 0 else self.file


@dataclass(frozen=True, slots=True)
class Problem:
    location: Location
    severity: Severity
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


def error(file: str, line: int, message: str) -> Problem:
    return Problem(Location(file, line), Severity.ERROR, message)


def warning(file: str, line: int, message: str) -> Problem:
    return Problem(Location(file, line), Severity.WARNING, message)


def has_errors(problems: tuple[Problem, ...] | list[Problem]) -> bool:
    return any(p.is_error for p in problems)


def sort_problems(problems: list[Problem] | tuple[Problem, ...]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.location, p.severity is not Severity.ERROR))


class PolicyError(Exception):
    """One or more errors (never key material) of a policy or secrets file."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SecretFileError(Exception):
    """A secrets file that must not be used (permissions, owner, size, type). The message
    names the file and the fix, never its contents."""
