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
import threading

#: One redirection of fds 1/2 at a time: two threads swapping fd 2 in turn could leave it pointing at a
#: closed temp file (the capture thread's decoder notes vs a recognizer loading under `quiet()`).
_FD_LOCK = threading.RLock()


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
    with _FD_LOCK, tempfile.TemporaryFile(mode="w+b") as sink:
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


@contextlib.contextmanager
def native_stderr(lines: list[str]):
    """Collect what is printed on file descriptor 2 inside the block into `lines` instead of showing it.

    Why: C libraries (libjpeg's "Corrupt JPEG data: 3 extraneous bytes", libpng) write their warnings
    straight to fd 2, once per file; the caller decides what to keep (and re-prints lines that are not
    its library's). With EMOTION_DEBUG=1 nothing is collected: everything shows as printed.
    """
    if os.environ.get("EMOTION_DEBUG"):
        yield lines
        return
    with _FD_LOCK, tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            sys.stderr.flush()
        except Exception:  # a closed stream: nothing buffered to lose
            pass
        try:
            saved = [(2, os.dup(2))]
            os.dup2(sink.fileno(), 2)
        except OSError:  # no fd 2 (embedded use): nothing to collect
            saved = []
        try:
            yield lines
        finally:
            _restore(saved)
            sink.seek(0)
            lines.extend(ln for ln in sink.read().decode("utf-8", "replace").splitlines() if ln.strip())


def _restore(saved: list[tuple[int, int]]) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed stream must not hide the real error
            pass
    for fd, dup in saved:
        os.dup2(dup, fd)
        os.close(dup)
