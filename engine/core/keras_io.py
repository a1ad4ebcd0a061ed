"""Loading a .keras model: the one public place, shared by the engine's Keras backend, export and training.

Keras (and so TensorFlow) is imported inside the function only: importing this module costs
nothing, and the runtime path on a Pi never reaches it (only `--backend keras` does).
"""
from __future__ import annotations

from pathlib import Path

from engine.core.errors import UserError


def load_keras(path: str | Path, compile: bool = False):
    """Load a .keras file with safe_mode (no arbitrary code from the file).

    Args:
        path: the .keras file.
        compile: also restore the optimizer and loss (resuming a training run).
    Returns:
        The Keras model.
    Raises:
        UserError: the file is missing or is not a loadable Keras model (one sentence).
    """
    import keras

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # keras raises many types for a bad file
        raise UserError(f"{path} is not a loadable Keras model ({type(exc).__name__})") from None
