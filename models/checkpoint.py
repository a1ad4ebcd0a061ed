"""A training run's folder and its per-epoch bookkeeping (used by models.trainer).

    out/last.keras        the model with its optimizer state after the newest epoch (what --resume loads)
    out/best.keras        the model of the best validation accuracy so far
    out/train_state.json  {"epoch", "options", "history", "best"}: what --resume continues from
    out/emotion.keras     the final float32 model (written by models.finalize at the end)

`Checkpoint` sets each epoch's learning rate and, after it, saves last (+ best when the validation
accuracy improved), appends the epoch's numbers to the history, writes the state file, and stops the
run early on a plateau. Every file is written under a temporary name and renamed, so a run killed at
any moment leaves whole files. Keras is imported only by `Checkpoint.callback()`.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from engine.core.errors import UserError

STATE_NAME = "train_state.json"
LAST_NAME = "last.keras"
BEST_NAME = "best.keras"
FINAL_NAME = "emotion.keras"


def load_state(out: Path) -> dict | None:
    """The state file of the run in `out`, or None when there is none; UserError if it is corrupt."""
    path = out / STATE_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is corrupt; delete the run folder or start a new --out") from None


def write_json(path: Path, data: dict) -> None:
    """Write `data` as indented JSON, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def save_model_atomic(model, path: Path) -> None:
    """model.save to a temporary name, then rename: a killed run never leaves half a .keras file."""
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


class Checkpoint:
    """Save last + best each epoch, keep the history, and stop early on a plateau.

    Args:
        model: the Keras model being fit (saved, and told to stop).
        out: the run folder.
        opts: the run's models.options.TrainOptions (epochs, patience; saved whole in the state file).
        history: the run's history so far ({metric: [one value per epoch]}); appended to in place.
        schedule: epoch -> learning rate (a pure function of the epoch, which makes resuming exact).
    """

    def __init__(self, model, out: Path, opts, history: dict, schedule: Callable[[int], float]):
        self.model = model
        self.out = Path(out)
        self.opts = opts
        self.history = history
        self.schedule = schedule
        #: the best validation accuracy so far (a resumed run's included)
        self.best = max(history.get("val_accuracy", [0.0]) or [0.0])
        self._t0 = time.time()

    def callback(self):
        """The Keras callback to pass to `model.fit` (Keras is imported here, not with this module)."""
        import keras

        return keras.callbacks.LambdaCallback(on_epoch_begin=self.epoch_begin, on_epoch_end=self.epoch_end)

    def epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.optimizer.learning_rate.assign(self.schedule(epoch))
        self._t0 = time.time()

    def epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import numpy as np

        opts, history, out = self.opts, self.history, self.out
        logs = dict(logs or {})
        logs["lr"] = self.schedule(epoch)
        logs["seconds"] = time.time() - self._t0
        for k, v in logs.items():
            history.setdefault(k, []).append(float(v))
        acc = float(logs.get("val_accuracy", 0.0))
        if acc > self.best:
            self.best = acc
            save_model_atomic(self.model, out / BEST_NAME)
        save_model_atomic(self.model, out / LAST_NAME)
        write_json(out / STATE_NAME, {"epoch": epoch + 1, "options": asdict(opts), "history": history, "best": self.best})
        va_hist = history.get("val_accuracy", [])
        since_best = len(va_hist) - 1 - int(np.argmax(va_hist)) if va_hist else 0
        print(f"epoch {epoch + 1}/{opts.epochs}: val_accuracy {acc:.4f} (best {self.best:.4f}), {logs['seconds']:.0f}s",
              file=sys.stderr)
        if opts.patience and since_best >= opts.patience:
            print(f"early stop: no improvement for {opts.patience} epochs", file=sys.stderr)
            self.model.stop_training = True
