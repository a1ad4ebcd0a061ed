"""What `python -m engine.batch` processes: INPUT arguments -> a sorted list of `Input`s.

An INPUT is a video, a photo, a folder (searched recursively), a glob (`'sessions/**/*.mp4'`,
quoted so the shell leaves it alone), or a text file (.txt/.lst/.list) naming one path, glob
or URL per line (blank lines and `#` comments skipped; relative paths are relative to the list).

Each input gets a name under the output folder that mirrors its path: relative to the deepest
folder all the INPUTs share (a single folder argument: relative to that folder), without the
extension, e.g. `day1/room2/interview.mp4` -> `OUT/day1/room2/interview.jsonl`.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from engine.errors import UserError
from engine.sources import IMAGE_EXTS, VIDEO_EXTS

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


def _media_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix.lower() in MEDIA_EXTS and p.is_file() and not p.name.startswith(".")]


def _expand(arg: str, base: Path, strict: bool) -> tuple[list[tuple[str, Path | None]], list[Path]]:
    """One INPUT -> ([(source, root folder it is named under)], [list files it read])."""
    if URL.match(arg):
        return [(arg, None)], []
    path = Path(arg).expanduser()
    if not path.is_absolute():
        path = base / path
    if glob.has_magic(arg):
        hits = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in hits if p.is_file() and p.suffix.lower() in MEDIA_EXTS]
        files += [q for p in hits if p.is_dir() for q in _media_under(p)]
        root = Path(re.split(r"[*?\[]", str(path), maxsplit=1)[0])
        root = root if str(root).endswith(os.sep) else root.parent
        return [(str(p.resolve()), root.resolve()) for p in files], []
    if path.is_dir():
        return [(str(p.resolve()), path.resolve()) for p in _media_under(path)], []
    if path.is_file() and path.suffix.lower() in LIST_EXTS:
        out: list[tuple[str, Path | None]] = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the input list {path}: {getattr(exc, 'strerror', None) or exc}") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out += _expand(line, path.parent, strict=False)[0]
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


def _relative(src: str, root: Path | None, common: Path | None) -> str:
    if root is None or common is None:  # a URL: host/path
        u = urlparse(src)
        return _inside(str(PurePosixPath("urls", u.netloc.replace(":", "_"), *PurePosixPath(u.path).parts[1:])))
    try:
        return _inside(Path(src).relative_to(common).as_posix())
    except ValueError:
        return _inside(Path(src).name)


def find_inputs(args: list[str], base: Path | None = None) -> list[Input]:
    """Expand INPUT arguments into unique inputs, sorted by name; UserError when none is found."""
    base = base or Path.cwd()
    found: dict[str, Path | None] = {}
    for arg in args:
        for src, root in _expand(arg, base, strict=True)[0]:
            found.setdefault(src, root)
    if not found:
        raise UserError(f"no inputs found in {' '.join(args)} (videos: {', '.join(sorted(VIDEO_EXTS))}; "
                        f"photos: {', '.join(sorted(IMAGE_EXTS))})")
    roots = [r for r in found.values() if r is not None]
    common = Path(os.path.commonpath([str(r) for r in roots])) if roots else None
    labels = {src: _relative(src, root, common) for src, root in found.items()}
    stems: dict[str, int] = {}
    for label in labels.values():
        stem = str(PurePosixPath(label).with_suffix(""))
        stems[stem] = stems.get(stem, 0) + 1
    inputs = []
    for src, label in labels.items():
        p = PurePosixPath(label)
        name = str(p.with_suffix(""))
        if stems[name] > 1 or (name in RESERVED) or not p.stem:  # a.mp4 + a.avi; "summary.mp4"
            name = str(p.with_name(p.name.replace(".", "_")))
        kind = _kind(src) if URL.match(src) or Path(src).exists() else "missing"
        inputs.append(Input(src, name, kind, label))
    return sorted(inputs, key=lambda i: i.name)
