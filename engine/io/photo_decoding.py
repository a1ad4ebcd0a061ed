"""Reading photo files with OpenCV without letting libjpeg / libpng write on the terminal.

Why apart from engine.io.sources: the decoders are C code that prints straight to file descriptor 2, so
keeping their per-file warnings off the engine's progress lines takes a capture of the native stderr
(engine.core.logs.native_stderr) and a pattern for the warnings; that is one concern, used by the photo
and folder sources and by the check that a photo given as --source can be read at all.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np

from engine.core.logs import native_stderr

#: The first words of the warnings libjpeg / libpng print on stderr for a damaged file they still decode
DECODER_WARNING = re.compile(r"^(Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters|Unsupported marker"
                             r"|Warning: unknown JFIF|JPEG datastream|Bogus marker|Huffman table|libpng (warning|error))")


class DecoderNotes:
    """Reads photos with OpenCV, keeping libjpeg's per-file stderr warnings off the terminal and counting them.

    Why: a folder of slightly damaged JPEGs printed "Corrupt JPEG data: N extraneous bytes before marker"
    (C code, straight to fd 2) between the engine's own lines. The photo is still decoded as far as it
    goes; `summary()` is one note at the end naming the damaged files. Other lines printed meanwhile
    (another thread's) are printed again, not lost.
    """

    def __init__(self):
        self.damaged: dict[str, None] = {}  # file names, in order, each once (a --loop reads them again)

    def imread(self, path: str | os.PathLike) -> np.ndarray | None:
        lines: list[str] = []
        with native_stderr(lines):
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        others = [ln for ln in lines if not DECODER_WARNING.match(ln)]
        if len(others) < len(lines):
            self.damaged[Path(path).name] = None
        for line in others:
            print(line, file=sys.stderr, flush=True)
        return frame

    def summary(self) -> str | None:
        """One line about the damaged photos, or None when every one decoded cleanly."""
        if not self.damaged:
            return None
        names = list(self.damaged)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return (f"note: {len(names)} photo(s) had damaged data and were decoded as far as it goes: {shown} "
                f"(EMOTION_DEBUG=1 shows the decoder's warnings)")
