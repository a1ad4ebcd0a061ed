"""Keep native libraries' log spam off the user's terminal.

TensorFlow, the TFLite converter, tf2onnx, LiteRT and MediaPipe print INFO lines straight to
file descriptors 1 and 2 from C++, where Python's logging cannot reach them. A user who
asked for one clear sentence should not get a screen of "Created XNNPACK delegate" first, so
noisy native calls run inside `quiet()`. Set EMOTION_DEBUG=1 to see everything.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet(label: str = ""):
    """Silence the C++/Python log spam TensorFlow, the TFLite converter and tf2onnx print
    on file descriptors 1 and 2. On an exception the captured tail is shown, then re-raised."""
    if os.environ.get("EMOTION_DEBUG"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                    os.dup2(sink.fileno(), fd)
                except OSError:  # no such descriptor (embedded use): nothing to silence
                    pass
            yield
        except BaseException:
            _restore(saved)
            saved = []
            sink.seek(0)
            tail = sink.read().decode("utf-8", "replace").strip().splitlines()[-15:]
            if tail and label:
                log(f"  last lines {label} printed:")
                for line in tail:
                    log(f"  | {line[:300]}")
            raise
        finally:
            _restore(saved)


def _restore(saved: list[tuple[int, int]]) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed stream must not hide the real error
            pass
    for fd, dup in saved:
        os.dup2(dup, fd)
        os.close(dup)
