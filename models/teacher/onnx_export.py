"""Trained teacher nets -> one ONNX model averaging their probabilities, with its labels.json
(`python -m models.gpu_teacher onnx`), and optionally its int8 twin.

Why ONNX: the lent GPU machine has PyTorch and no TensorFlow, and `models.train --teacher-pool`
accepts any export that keeps the model contract (raw 0..255 NHWC faces in, probabilities in
FER2013 order out, a labels.json beside it): the file crosses over without a converter. The int8
twin goes through export's own ONNX quantiser: ~3.5x faster as a teacher on a 2-core CPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.core.contract import FACE_SIZE, ModelSpec, sha256_file
from engine.core.errors import UserError
from models.teacher.nets import build, import_torch, scale
from models.teacher.oof import load_run
from models.teacher.pack import CLASSES, load


def _load_nets(files: list[Path], torch) -> tuple[list, list[dict]]:
    """(nets in eval mode, their meta records) of `train` outputs; a Keras fold is refused in one sentence."""
    nets, metas = [], []
    for f in files:
        d, meta = load_run(f)
        if meta.get("kind") == "keras":
            raise UserError(f"{f} is a Keras k-fold run: its net is the emotion.keras beside it (`python -m models.ensemble` "
                            "averages Keras nets)")
        net = build(meta["arch"], meta["width"])
        sd = {k[2:]: torch.from_numpy(d[k].astype(np.float32) if d[k].dtype == np.float16 else d[k]) for k in d.files
              if k.startswith("w.")}
        net.load_state_dict(sd)
        nets.append(net.eval())
        metas.append(meta)
    return nets, metas


def _write_int8(out: Path, calib: Path, calib_size: int) -> None:
    """emotion_int8.onnx beside `out`, calibrated on `calib_size` training faces of the pack `calib`."""
    # int8 through export's own ONNX quantiser (static QDQ, MinMax): ~3.5x faster as a teacher
    # on this CPU (167 against 47 faces/s for five nets), 0.25 points less accurate
    import tempfile

    from export.convert import convert_onnx_int8

    x, _ = load(calib, "train")
    pick = np.random.default_rng(0).permutation(len(x))[:calib_size]
    int8 = out.with_name("emotion_int8.onnx")
    with tempfile.TemporaryDirectory() as work:
        convert_onnx_int8(out, int8, x[pick, :, :, None].astype(np.float32), Path(work), list(CLASSES))
    print(f"wrote {int8} (calibrated on {len(pick)} training faces)")


def to_onnx(files: list[Path], out: Path, calib: Path | None = None, calib_size: int = 500,
            temperature: float = 1.0) -> None:
    torch = import_torch("onnx")
    nets, metas = _load_nets(files, torch)

    class Contract(torch.nn.Module):
        """Raw NHWC 0..255 faces -> mean probability of the nets (the model contract)."""

        def __init__(self):
            super().__init__()
            self.nets = torch.nn.ModuleList(nets)

        def forward(self, x):
            x = scale(x.permute(0, 3, 1, 2))
            return torch.stack([torch.softmax(n(x) / temperature, -1) for n in self.nets]).mean(0)

    model = Contract().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(2, FACE_SIZE, FACE_SIZE, 1),), str(out), input_names=["faces"], output_names=["probs"],
                      dynamic_axes={"faces": {0: "n"}, "probs": {0: "n"}}, opset_version=17, dynamo=False)
    ModelSpec(labels=list(CLASSES), arch="+".join(f"{m['arch']}{m['width']}" for m in metas), source_sha256=sha256_file(out),
              extra={"teachers": metas, "temperature": temperature, "made_by": "python -m models.gpu_teacher onnx"}).save(out.parent)
    print(f"wrote {out} and labels.json ({len(nets)} nets)")
    if calib is not None:
        _write_int8(out, calib, calib_size)
