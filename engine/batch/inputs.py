"""What `python -m engine.batch` processes: INPUT arguments -> a sorted list of `Input`s.

An INPUT is a video, a photo, a folder (searched recursively), a glob (`'sessions/**/*.mp4'`,
quoted so the shell leaves it alone), or a text file (.txt/.lst/.list) naming one path, glob
or URL per line (blank lines and `#` comments skipped; relative paths are relative to the list).

Each input gets a name under the output folder that mirrors its path: relative to the deepest
folder all the INPUTs share (a single folder argument, or a glob's folder part: relative to that
folder), without the extension, e.g. `day1/room2/interview.mp4` -> `OUT/day1/room2/interview.jsonl`.
A file whose folder holds another media file of the same stem (`a.mp4` next to `a.avi`) keeps its
extension (`a_mp4`), whichever of them the INPUTs select: a file's name does not depend on which
form (folder, glob, list) named it, so switching forms resumes. A URL is named
`urls/HOST_PORT/PATH-KEY` with KEY a short hash of the whole URL (`engine.core.urls.url_key`): two URLs
that differ only in their query get two folders, and no user, password or token reaches a name
(the summary shows `engine.core.urls.redact`'s form). No two inputs ever share a name (checked last).
Symbolic links that lead nowhere (dangling, or a loop) are listed as skipped, not silently dropped.
"""
from __future__ import annotations

import errno
import functools
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from engine.core.errors import UserError
from engine.io.sources import IMAGE_EXTS, VIDEO_EXTS
from engine.core.urls import redact, url_key

LIST_EXTS = {".txt", ".lst", ".list"}
MEDIA_EXTS = VIDEO_EXTS | IMAGE_EXTS
URL = re.compile(r"^(https?|rtsp|rtmp)://", re.I)
#: Output names the batch itself writes at the top of the output folder.
RESERVED = {"summary", "index"}


@dataclass(frozen=True)
class Input:
    src: str  # an absolute path or a URL
    name: str  # output name: relative, POSIX, no extension ("day1/interview")
    kind: str  # "video" | "image" | "missing"
    label: str  # what the summary calls it: the relative path with its extension

    def to_job(self) -> dict:
        return {"src": self.src, "name": self.name, "kind": self.kind, "label": self.label}


def _kind(path: str) -> str:
    ext = Path(urlparse(path).path if URL.match(path) else path).suffix.lower()
    return "image" if ext in IMAGE_EXTS and ext != ".gif" else "video"


def _broken_link(p: Path) -> str | None:
    """Why the symbolic link `p` leads nowhere (a loop, or a target that does not exist); None if it is fine."""
    if not p.is_symlink():
        return None
    try:
        p.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop so
        return "a symbolic link loop"
    except OSError as exc:
        return "a symbolic link loop" if exc.errno == errno.ELOOP else "a dangling symbolic link (its target does not exist)"
    return None


def _folder_link(p: Path) -> str | None:
    """A symbolic link to a folder is not searched (a link to a folder above it would loop forever): say so."""
    if not (p.is_symlink() and p.is_dir()):
        return None
    target = p.resolve()
    return ("a symbolic link loop (to a folder above it): not followed" if target == p.parent.resolve() or target in p.parent.resolve().parents
            else "a symbolic link to a folder: not followed (give that folder as an INPUT)")


def _media_under(folder: Path, skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """The media files under `folder`; broken links among its entries go to `skipped` as (path, why)."""
    found = []
    for p in folder.rglob("*"):
        if p.name.startswith("."):
            continue
        why = _broken_link(p) or _folder_link(p)
        if why is not None:
            if skipped is not None:
                skipped.append((str(p), why))
        elif p.suffix.lower() in MEDIA_EXTS and p.is_file():
            found.append(p)
    return found


def _glob_root(path: Path) -> Path:
    """The folder a glob's matches are named under: its part before the first wildcard (`DIR/**/*.mp4` -> DIR,
    as for the folder DIR; `DIR/day*/x.mp4` -> DIR)."""
    head = re.split(r"[*?\[]", str(path), maxsplit=1)[0]
    return Path(head) if head.endswith(os.sep) else Path(head).parent


def _expand(arg: str, base: Path, strict: bool,
            skipped: list[tuple[str, str]] | None = None) -> tuple[list[tuple[str, Path | None]], list[Path]]:
    """One INPUT -> ([(source, root folder it is named under)], [list files it read]); broken links -> `skipped`."""
    if URL.match(arg):
        return [(arg, None)], []
    path = Path(arg).expanduser()
    if not path.is_absolute():
        path = base / path
    if glob.has_magic(arg):
        hits = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        for p in hits:
            why = _broken_link(p)
            if why is not None and skipped is not None:
                skipped.append((str(p), why))
        files = [p for p in hits if p.is_file() and p.suffix.lower() in MEDIA_EXTS]
        files += [q for p in hits if p.is_dir() for q in _media_under(p, skipped)]
        root = _glob_root(path)
        return [(str(p.resolve()), root.resolve()) for p in files], []
    why = _broken_link(path)
    if why is not None:
        if strict:
            raise UserError(f"input {arg} is {why}")
        if skipped is not None:
            skipped.append((str(path), why))
        return [], []
    if path.is_dir():
        return [(str(p.resolve()), path.resolve()) for p in _media_under(path, skipped)], []
    if path.is_file() and path.suffix.lower() in LIST_EXTS:
        out: list[tuple[str, Path | None]] = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the input list {path}: {getattr(exc, 'strerror', None) or exc}") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out += _expand(line, path.parent, strict=False, skipped=skipped)[0]
        return out, [path.resolve()]
    if path.exists():
        return [(str(path.resolve()), path.resolve().parent)], []
    if strict:
        raise UserError(f"input {arg} does not exist (give videos, photos, folders, globs or a .txt list of paths)")
    return [(str(path), path.parent)], []  # recorded as a failed input, the batch goes on


def _inside(label: str) -> str:
    """The label with every '..', '.', empty and root part dropped: outputs are named after it under --out,
    and a list file or URL must never steer them outside (`../../x.mp4`, `http://h/../../x.mp4`)."""
    parts = [q for q in PurePosixPath(label.replace("\\", "/")).parts if q not in ("..", ".", "", "/")]
    return str(PurePosixPath(*parts)) if parts else "input"


def _url_name(src: str) -> str:
    """`urls/HOST_PORT/PATH-KEY` (no extension): no userinfo (user:password@) and no query (tokens) in it, and
    KEY (url_key: a hash of the whole URL) keeps URLs that differ only there apart."""
    u = urlparse(src)
    try:
        host = (u.hostname or "host") + (f"_{u.port}" if u.port else "")
    except ValueError:  # a port that is not a number
        host = u.hostname or "host"
    path = PurePosixPath(_inside(str(PurePosixPath("urls", host, *PurePosixPath(u.path).parts[1:]))))
    stem = path.stem if path.suffix.lower() in MEDIA_EXTS else path.name
    return str(path.with_name(f"{stem}-{url_key(src)}"))


def _twins(src: str) -> bool:
    """Whether `src`'s folder holds another media file of the same stem (a.mp4 next to a.avi): then both keep their
    extension in their names. Decided by the folder, not by which INPUTs were given, so a file gets the same name
    from a folder, a glob or a list."""
    p = Path(src)
    return sum(1 for stem, _ in _folder_media(str(p.parent)) if stem == p.stem) > 1


@functools.lru_cache(maxsize=4096)
def _folder_media(folder: str) -> tuple[tuple[str, str], ...]:
    """(stem, name) of the media files in `folder` (one listing per folder, however many inputs it holds)."""
    try:
        with os.scandir(folder) as entries:
            return tuple((Path(e.name).stem, e.name) for e in entries
                         if Path(e.name).suffix.lower() in MEDIA_EXTS and not e.name.startswith("."))
    except OSError:
        return ()


def _relative(src: str, root: Path | None, common: Path | None) -> str:
    if root is None or common is None:  # a URL: shown redacted; named by _url_name
        return redact(src)
    try:
        return _inside(Path(src).relative_to(common).as_posix())
    except ValueError:
        return _inside(Path(src).name)


def find_inputs(args: list[str], base: Path | None = None, skipped: list[tuple[str, str]] | None = None) -> list[Input]:
    """Expand INPUT arguments into unique inputs, sorted by name; UserError when none is found. Broken symbolic
    links met on the way are appended to `skipped` as (path, why), each once."""
    base = base or Path.cwd()
    found: dict[str, Path | None] = {}
    links: list[tuple[str, str]] = []
    for arg in args:
        for src, root in _expand(arg, base, strict=True, skipped=links)[0]:
            found.setdefault(src, root)
    if skipped is not None:
        skipped.extend(dict.fromkeys(links))
    _folder_media.cache_clear()  # a fresh look at the folders for this call
    if not found:
        raise UserError(f"no inputs found in {' '.join(args)} (videos: {', '.join(sorted(VIDEO_EXTS))}; "
                        f"photos: {', '.join(sorted(IMAGE_EXTS))})")
    roots = [r for r in found.values() if r is not None]
    common = Path(os.path.commonpath([str(r) for r in roots])) if roots else None
    labels = {src: _relative(src, root, common) for src, root in found.items()}
    stems: dict[str, int] = {}
    for src, label in labels.items():
        if not URL.match(src):
            stem = str(PurePosixPath(label).with_suffix(""))
            stems[stem] = stems.get(stem, 0) + 1
    inputs = []
    for src, label in labels.items():
        inputs.append(Input(src, _name(src, label, stems), _kind(src) if URL.match(src) or Path(src).exists() else "missing", label))
    return sorted(_distinct(inputs), key=lambda i: i.name)


def _name(src: str, label: str, stems: dict[str, int]) -> str:
    if URL.match(src):
        return _url_name(src)
    p = PurePosixPath(label)
    name = str(p.with_suffix(""))
    # a.mp4 + a.avi (in its folder, or among the inputs: two folders' a.mp4 named by their file name only); "summary.mp4"
    if stems[name] > 1 or _twins(src) or (name in RESERVED) or not p.stem:
        name = str(p.with_name(p.name.replace(".", "_")))
    return name


def _distinct(inputs: list[Input]) -> list[Input]:
    """Inputs whose names are all different: one that shares a name (`a_mp4.avi` next to `a.mp4` + `a.avi`) gets
    url_key(src) appended; a clash even then is an error rather than one input's results overwriting another's."""
    seen: dict[str, int] = {}
    for i in inputs:
        seen[i.name] = seen.get(i.name, 0) + 1
    fixed = [i if seen[i.name] == 1 else Input(i.src, f"{i.name}-{url_key(i.src)}", i.kind, i.label) for i in inputs]
    names = [i.name for i in fixed]
    if len(set(names)) != len(names):
        clash = min(n for n in names if names.count(n) > 1)
        raise UserError(f"two inputs would write the same outputs ({clash}): rename one of them")
    return fixed
