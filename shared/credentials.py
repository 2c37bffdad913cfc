"""Secret settings read from mounted files (`RTT_<NAME>_FILE`).

Docker and Kubernetes hand secrets to a container as files; a setting read from a file
never appears in `docker inspect`, `ps e` or a crash dump of the environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["FILE_SUFFIX", "SecretFileError", "read_secret_files"]

FILE_SUFFIX = "_FILE"


class SecretFileError(ValueError):
    """A `_FILE` setting is unreadable, or given together with the variable it replaces."""


def read_secret_files(env: Mapping[str, str], variables: Iterable[str]) -> dict[str, str]:
    """The value of each variable in `variables` given as `<VARIABLE>_FILE` in `env`.

    One trailing newline (what `echo` and most editors leave) is dropped; nothing else.
    """
    values: dict[str, str] = {}
    for variable in variables:
        file_variable = variable + FILE_SUFFIX
        path = env.get(file_variable)
        if path is None:
            continue
        if variable in env:
            raise SecretFileError(f"{variable} and {file_variable} are both set: keep one")
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            )
            raise SecretFileError(f"{file_variable}: cannot read {path}: {reason}") from None
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        values[variable] = text
    return values
