"""Errors that the command line turns into one-line messages and exit codes."""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_JUDGE_UNREACHABLE = 3


class TraceError(Exception):
    """Base class: an expected failure reported to the user in one line, without a traceback."""

    exit_code = 1


class InputError(TraceError):
    """Bad user input. Names the file, the line or row, and the field when they are known."""

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path, self.line, self.field, self.detail = path, line, field, message
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
            where += ": "
        what = f"field '{field}': " if field is not None else ""
        super().__init__(f"{where}{what}{message}")


class JudgeUnavailableError(TraceError):
    """The judge could not be reached after all retries. Stored verdicts are kept; a rerun resumes."""

    exit_code = EXIT_JUDGE_UNREACHABLE
