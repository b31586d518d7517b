"""Expected errors: each renders as one line that says what, where and what would be valid.

The CLI prints these without a traceback and exits non-zero; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CotrainError(Exception):
    """Base of every expected, user-facing error."""


class ConfigError(CotrainError):
    """A configuration, option or YAML field is invalid."""


class DataError(CotrainError):
    """Source data is malformed.

    Args:
        file: the file (or directory) at fault.
        problem: what is wrong, with the value and what would be valid.
        episode: the episode id, when the problem is inside one.
        frame: the frame index inside the episode, when known.
        key: the key, column, topic or dataset name, when known.
    """

    def __init__(
        self,
        file: object,
        problem: str,
        *,
        episode: object | None = None,
        frame: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file = str(file)
        self.problem = problem
        self.episode = episode
        self.frame = frame
        self.key = key
        super().__init__(self.render())

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions pickle through `args` by default, which would lose the fields when a worker
        # process (or a Ray task) sends this error back to the parent.
        return (_rebuild_data_error, (self.file, self.problem, self.episode, self.frame, self.key))

    def render(self) -> str:
        where = [self.file]
        if self.episode is not None:
            where.append(f"episode {self.episode}")
        if self.frame is not None:
            where.append(f"frame {self.frame}")
        if self.key is not None:
            where.append(f"key {self.key!r}")
        return ", ".join(where) + f": {self.problem}"

    def located(self, *, episode: object | None = None, file: object | None = None) -> DataError:
        """A copy with the episode or file filled in where the raiser did not know it."""
        return DataError(
            file if file is not None and self.file in ("", "?") else self.file,
            self.problem,
            episode=self.episode if self.episode is not None else episode,
            frame=self.frame,
            key=self.key,
        )


def _rebuild_data_error(file: str, problem: str, episode: object, frame: int | None, key: str | None) -> DataError:
    return DataError(file, problem, episode=episode, frame=frame, key=key)


def suggest(name: str, valid: Iterable[str]) -> str:
    """' (did you mean X?)' for the nearest valid name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> ConfigError:
    """The error for an unknown registry or option name: lists the valid ones and suggests one."""
    names = sorted(valid)
    return ConfigError(f"unknown {kind} {name!r}{suggest(name, names)}; valid: {', '.join(names)}")
