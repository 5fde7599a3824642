"""``explain``'s inputs: which files to read, where each overlay goes, and the class names.

Only paths are listed here (to count them and settle output names); images are read later,
batch by batch (:mod:`.images`). Nothing is opened: special files (FIFOs, devices, sockets)
are recognised by ``os.stat`` alone and become failed jobs, as do folders that cannot be
listed.
"""

from __future__ import annotations

import inspect
import json
import os
import stat
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile

from .parse import OUTPUT_SUFFIX, UsageError

# Formats Pillow registers but cannot decode without an external handler.
_UNDECODABLE_SUFFIXES = {".mpg", ".mpeg"}


@dataclass(frozen=True)
class Job:
    """One input and where its overlay goes (relative to ``--out``). ``problem`` is set when
    the input fails before it is read (a special file, a folder that cannot be listed, an
    output that would collide); ``output`` is None for a folder.

    Example:
        >>> Job(Path("photos/cats/a.jpg"), Path("cats/a.gradcam.png")).problem is None
        True
    """

    source: Path
    output: Path | None
    problem: str | None = None


def image_suffixes() -> frozenset[str]:
    """File name suffixes of the formats Pillow can decode, for searching folders.

    Example:
        >>> {".jpg", ".png", ".bmp", ".webp", ".gif"} <= image_suffixes()
        True
    """
    Image.init()
    return frozenset(
        suffix for suffix, name in Image.registered_extensions().items()
        if name in Image.OPEN and suffix not in _UNDECODABLE_SUFFIXES
        and not (inspect.isclass(Image.OPEN[name][0])
                 and issubclass(Image.OPEN[name][0], ImageFile.StubImageFile))
    )


def special_file_problem(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not read (None for a regular file).

    Example:
        >>> special_file_problem(stat.S_IFIFO | 0o644)
        'not a regular file (a FIFO); skipped without opening it'
    """
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
             stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
             stat.S_IFDIR: "a folder"}
    kind = kinds.get(stat.S_IFMT(mode), "a special file")
    return f"not a regular file ({kind}); skipped without opening it"


def collect_inputs(inputs: Sequence[Path], out_dir: Path) -> list[Job]:
    """The inputs in order, each with its output path relative to ``out_dir``.

    Files named on the command line are always taken; folders are searched recursively
    (sorted, hidden entries skipped) for files with an image suffix, skipping earlier
    overlays (``*.gradcam.png``) inside ``out_dir``. A folder's layout is mirrored under
    ``out_dir``; a file given directly goes to its top. The same file given twice is taken
    once. Special files and folders that cannot be listed become jobs with a ``problem``.

    Raises:
        UsageError: An input does not exist, or no image file (and no failure) was found.

    Example:
        >>> jobs = collect_inputs([Path("photos")], Path("out"))
        >>> jobs[0].source, jobs[0].output
        (PosixPath('photos/cats/a.jpg'), PosixPath('cats/a.gradcam.png'))
    """
    suffixes = image_suffixes()
    out_resolved = out_dir.resolve()
    # (source, where it is mirrored from, its resolved path, problem): roots are resolved
    # once, not every file, which costs a system call or more per file.
    found: list[tuple[Path, Path | None, Path, str | None]] = []
    for given in inputs:
        try:
            mode = given.stat().st_mode
        except OSError:
            raise UsageError(f"INPUT {str(given)!r} does not exist") from None
        if stat.S_ISDIR(mode):
            root = given.resolve()
            for path, problem, is_folder in _walk_images(given, suffixes, out_resolved):
                relative = path.relative_to(given)
                found.append((path, None if is_folder else relative, root / relative, problem))
        else:
            found.append((given, Path(given.name), given.resolve(), special_file_problem(mode)))
    seen: set[Path] = set()
    unique = []
    for source, relative, key, problem in found:
        if key not in seen:
            seen.add(key)
            unique.append((source, relative, problem))
    if not unique:
        raise UsageError("no image files found in " + ", ".join(repr(str(p)) for p in inputs))
    stems = Counter(relative.parent / relative.stem for _, relative, _ in unique if relative)
    jobs, taken = [], {}
    for source, relative, problem in unique:
        if relative is None:
            jobs.append(Job(source, None, problem))
            continue
        name = relative.stem if stems[relative.parent / relative.stem] == 1 else relative.name
        output = relative.parent / (name + OUTPUT_SUFFIX)
        if problem:
            pass
        elif output in taken:
            problem = (f"its output {str(output)!r} would overwrite that of "
                       f"{str(taken[output])!r}; explain them in separate runs")
        elif out_resolved / output in seen:
            problem = f"its output {str(output)!r} would overwrite an input file"
        else:
            taken[output] = source
        jobs.append(Job(source, output, problem))
    return jobs


def _walk_images(folder: Path, suffixes: frozenset[str],
                 out_dir: Path) -> Iterator[tuple[Path, str | None, bool]]:
    """``(path, problem, is_folder)`` for each image file under ``folder`` in sorted order,
    and for each folder that cannot be listed; special files and those folders come with
    their problem."""
    unreadable: list[OSError] = []

    def folder_errors() -> Iterator[tuple[Path, str | None, bool]]:
        while unreadable:
            error = unreadable.pop(0)
            yield Path(error.filename), f"cannot list folder: {error.strerror or error}", True

    for root, dirs, files in os.walk(folder, onerror=unreadable.append):
        yield from folder_errors()
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        in_out_dir = Path(root).resolve().is_relative_to(out_dir)
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in suffixes:
                continue
            if in_out_dir and name.endswith(OUTPUT_SUFFIX):
                continue
            path = Path(root, name)
            try:
                problem = special_file_problem(os.stat(path).st_mode)
            except OSError:  # a dangling link: reading it reports why
                problem = None
            yield path, problem, False
    yield from folder_errors()  # an error on the last folder comes after the walk


def read_class_names(path: Path) -> list[str]:
    """Class names from a file: a JSON list of strings, or one name a line.

    Raises:
        UsageError: The file cannot be read or holds no names.

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "names.txt"
        >>> _ = file.write_text("cat\\ndog\\n")
        >>> read_class_names(file)
        ['cat', 'dog']
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--class-names: cannot read {str(path)!r}: {error}") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(f"--class-names: {str(path)!r} is not valid JSON: {error}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UsageError(f"--class-names: {str(path)!r} must hold a JSON list of strings")
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    if not names:
        raise UsageError(f"--class-names: {str(path)!r} holds no class names")
    return names
