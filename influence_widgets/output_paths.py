"""The one check before the package writes to a path a user gave (score stores, HTML export,
benchmark outputs).

The rule: never delete or overwrite anything the package did not write, and replace what it
wrote only when asked. :func:`check_output_path` is called before any work starts (so a bad path
fails at once, not after an hour of scoring) and again just before writing:

- an empty or non-string path is an error naming the argument;
- a path that does not exist, or an empty folder (for a folder writer), is written;
- an existing file, a non-empty folder, or an earlier output of the package (``is_ours``) is
  replaced only with ``overwrite=True``; the message says what is there and names
  ``overwrite=True`` as the way to replace it;
- the current directory, a folder that contains it, the home directory and the folders that
  contain it are never replaced, not even with ``overwrite=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

__all__ = ["check_output_path"]


def check_output_path(
    path: str | os.PathLike[str],
    argument: str,
    *,
    overwrite: bool = False,
    kind: Literal["folder", "file"] = "folder",
    is_ours: Callable[[Path], bool] | None = None,
    what: str = "output",
) -> Path:
    """``path`` as a :class:`~pathlib.Path` when the package may write a ``kind`` there; else a
    clear error that names ``argument`` and says how to fix it. Deletes nothing.

    Args:
        path: where the writer will write.
        argument: the name of the user's argument, for the messages (e.g. ``"store"``).
        overwrite: the user asked to replace what is at ``path``.
        kind: ``"folder"`` (a directory the writer fills, e.g. a Zarr store) or ``"file"``.
        is_ours: tells whether what exists at ``path`` is an earlier output of this writer (only
            for the message: it is replaced only with ``overwrite=True`` as well).
        what: what the writer writes, for the messages (e.g. ``"score store"``).

    Raises:
        TypeError: ``path`` is not a str or path-like, or ``overwrite`` not a bool.
        ValueError: ``path`` is empty, or is (or contains) the current or the home directory.
        NotADirectoryError: a folder on the way to ``path`` is a file.
        IsADirectoryError: ``kind="file"`` and ``path`` is a folder.
        FileExistsError: something is at ``path`` and ``overwrite`` is False.
    """
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite: expected True or False, got {overwrite!r}")
    target = _as_path(path, argument, what)
    _refuse_protected(target, argument)
    _check_parents(target, argument)
    if not os.path.lexists(target):
        return target
    if target.is_dir():
        if kind == "file":
            raise IsADirectoryError(
                f"{argument}: {os.fspath(path)!r} is a folder; give the path of a file to write "
                f"the {what} to, e.g. {os.fspath(target / 'output.html')!r}"
            )
        entries = sorted(os.listdir(target))
        if entries and not overwrite:
            raise FileExistsError(_existing_folder(path, argument, entries, is_ours, what))
    elif not overwrite:
        mine = is_ours is not None and is_ours(target)
        raise FileExistsError(
            f"{argument}: {os.fspath(path)!r} is an existing file"
            f"{f' (a {what} of an earlier run)' if mine else ''}; choose a new path, or pass "
            "overwrite=True to replace it"
        )
    return target


def _as_path(path: object, argument: str, what: str) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"{argument}: expected a path (str or pathlib.Path) for the {what}, got "
            f"{type(path).__name__}"
        )
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{argument}: expected a str path, got {type(text).__name__}")
    if not text:
        raise ValueError(
            f"{argument}: an empty path names the current directory; give a new folder or file "
            f"for the {what}, e.g. {argument}='scores.zarr'"
        )
    return Path(text)


def _refuse_protected(target: Path, argument: str) -> None:
    """The current directory, the home directory and every folder above them: never written."""
    resolved = target.resolve()
    home = os.path.expanduser("~")  # "~" itself when no home directory is known
    protected_folders = [(Path.cwd(), "current")] + ([(Path(home), "home")] if home != "~" else [])
    for folder, name in protected_folders:
        protected = folder.resolve()
        if resolved == protected or resolved in protected.parents:
            relation = "is" if resolved == protected else "contains"
            raise ValueError(
                f"{argument}: {os.fspath(target)!r} ({resolved}) {relation} the {name} "
                f"directory, which the package never replaces, not even with overwrite=True; "
                f"name a new folder or file inside it, e.g. {os.fspath(target / 'scores.zarr')!r}"
            )


def _check_parents(target: Path, argument: str) -> None:
    """The nearest existing folder on the way to ``target`` must be a folder, not a file."""
    for parent in target.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(
                    f"{argument}: {os.fspath(target)!r} cannot be written: {os.fspath(parent)!r} "
                    "is a file, not a folder"
                )
            return


def _existing_folder(
    path: str | os.PathLike[str],
    argument: str,
    entries: list[str],
    is_ours: Callable[[Path], bool] | None,
    what: str,
) -> str:
    if is_ours is not None and is_ours(Path(path)):
        return (
            f"{argument}: {os.fspath(path)!r} holds a {what} of an earlier run; pass "
            "overwrite=True to replace it, or choose a new path"
        )
    shown = ", ".join(repr(e) for e in entries[:5]) + (", ..." if len(entries) > 5 else "")
    return (
        f"{argument}: {os.fspath(path)!r} is a folder that is not a {what} and holds "
        f"{len(entries)} file(s) or folder(s) ({shown}); choose a new path, or pass "
        "overwrite=True to delete its contents and replace it"
    )
