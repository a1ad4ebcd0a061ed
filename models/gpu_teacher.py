"""Train a large distillation teacher in PyTorch on a CUDA machine, then export it as an ONNX model
that keeps the model contract (optional tool, not part of the product; PyTorch is not a project
dependency).

Why it exists: the shipped nets are distilled (`models.train --teacher ... --teacher-pool`) and a
student rarely ends far above its teacher. The teachers this CPU can train in a session stop at
~68%; an H200 trains three ResNet-18-style nets (6.3M parameters each) at once, ~100 epochs each in
6 minutes (single nets 69.6-70.9% with flip TTA, five averaged 71.8%), but the lent GPU machine has
PyTorch and no TensorFlow, so the teacher is written here in PyTorch and crosses over as ONNX,
which `--teacher-pool` already accepts (it only needs the contract: raw 0..255 NHWC faces in,
probabilities in FER2013 order out, a labels.json beside it).

Caveat, measured: these nets learn their training faces by heart (93.5% right on them, mean top
probability 0.88), and distillation labels exactly those faces, so the students distilled from the
first teacher were more accurate on FER2013's crops but less steady through the engine, and were not
shipped (benchmarks/results/README.md, session 8). A teacher should label faces it did not train on
(`train --folds K --fold I` + `oof`); softer targets (`onnx --temperature`) were tried once and were not enough alone.

Four steps, each a sub-command of `python -m models.gpu_teacher` (run from the repo root; it
needs numpy and opencv, and torch for `train` and `onnx`):
  pack   (here)  FER2013 folders -> one .npz of the JPEG bytes (one shared 328-byte header stored
                 once), small enough to travel to the GPU machine with the repo (~49 MB)
  train  (GPU)   one net per process, for a fixed number of MINUTES (the schedule runs on the
                 clock, so a run always ends in its lease); keeps the raw or the weight-averaged
                 (EMA) net, whichever scores better on validation with flip TTA; writes its
                 weights (float16) and validation probabilities in one .npz
  oof    (here)  k-fold nets (`train --folds K --fold I`: trained without fold I, they label only
                 fold I; or Keras ones, `models.train --folds K --fold I` -> RUN/fold_answers.npz,
                 the same folds) -> one out-of-fold soft label per training face, keyed by the
                 face's pixels, for `models.train --soft-labels`
  onnx   (here)  one or more trained .npz -> one ONNX file averaging their probabilities, +
                 labels.json; with --calib PACK also its int8 twin (export's ONNX quantiser)
The whole GPU lease as one script: models/kfold_teachers.sh.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from engine.core.contract import FACE_SIZE, FER_CLASSES, ModelSpec, sha256_file
from engine.core.errors import UserError, cli_main
from models.data import face_keys

CLASSES = FER_CLASSES
SPLITS = ("train", "validation")


# ---------------------------------------------------------------------------- data
def pack(data: Path, out: Path) -> None:
    """Every FER2013 file shares its JPEG header up to the scan; storing it once saves 9 MB."""
    arrays: dict[str, np.ndarray] = {}
    header = None
    for split in SPLITS:
        bodies, labels = [], []
        for i, c in enumerate(CLASSES):
            files = sorted((data / split / c).glob("*.jpg"))
            if not files:
                raise UserError(f"no .jpg faces in {data / split / c} (pack reads FER2013's JPEG folders)")
            for f in files:
                b = f.read_bytes()
                k = b.find(b"\xff\xda")
                end = k + 2 + int.from_bytes(b[k + 2:k + 4], "big")
                if header is None:
                    header = b[:end]
                if k < 0 or b[:end] != header:
                    raise UserError(f"{f} has another JPEG header than the first file (pack stores FER2013's one header once)")
                bodies.append(np.frombuffer(b[end:], np.uint8))
                labels.append(i)
        arrays[f"{split}_bytes"] = np.concatenate(bodies)
        arrays[f"{split}_off"] = np.cumsum([0] + [len(b) for b in bodies]).astype(np.int64)
        arrays[f"{split}_y"] = np.array(labels, np.int64)
        print(f"{split}: {len(bodies)} faces")
    arrays["header"] = np.frombuffer(header, np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def load(pack_file: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(faces uint8 (N, 48, 48), labels (N,)) of one split of a pack, decoded as cv2 reads the files."""
    if not Path(pack_file).is_file():
        raise UserError(f"no pack at {pack_file}: make one with `python -m models.gpu_teacher pack`")
    try:
        d = np.load(pack_file)  # plain arrays: allow_pickle stays False
        header, body, off = d["header"].tobytes(), d[f"{split}_bytes"], d[f"{split}_off"]
    except (OSError, ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
        raise UserError(f"{pack_file} is not a pack (`python -m models.gpu_teacher pack` writes one; {type(exc).__name__})") from None
    x = np.stack([cv2.imdecode(np.frombuffer(header + body[off[i]:off[i + 1]].tobytes(), np.uint8),
                               cv2.IMREAD_GRAYSCALE) for i in range(len(off) - 1)])
    return x, d[f"{split}_y"]


FOLD_SEED = 2026  #: one split for every architecture and seed: their out-of-fold answers can be averaged


def fold_of(y: np.ndarray, folds: int, keys: np.ndarray | None = None) -> np.ndarray:
    """Fold number (0..folds-1) of each training face: stratified (each class dealt round-robin over
    the folds after a shuffle fixed by FOLD_SEED), so every fold holds the rare classes too and every
    net trained with the same k, whatever its seed, leaves out exactly the same faces.

    `keys` (face_keys): identical faces form one group and go to one fold together. FER2013's training
    split holds ~2,300 faces in exact-duplicate groups (~8%); split across folds, a net would "not have
    trained on" a face whose twin it learnt by heart. A group is dealt with the class most of its copies
    carry."""
    if keys is None:
        keys = np.arange(len(y), dtype=np.uint64)
    _, group = np.unique(keys, return_inverse=True)
    n_groups = int(group.max()) + 1 if len(group) else 0
    votes = np.zeros((n_groups, int(y.max()) + 1 if len(y) else 1), np.int64)
    np.add.at(votes, (group, y), 1)
    gclass = votes.argmax(1)
    gfold = np.empty(n_groups, np.int64)
    rng = np.random.default_rng(FOLD_SEED)
    for c in np.unique(gclass):
        idx = np.flatnonzero(gclass == c)
        gfold[rng.permutation(idx)] = np.arange(len(idx)) % folds
    return gfold[group]


def find_keys(uniq: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in `uniq`, found?) of each of `want`'s face keys; `uniq` sorted and unique (np.unique).
    The one lookup of keyed answers: soft labels for a training set, a Keras fold's answers in a pack."""
    if not len(uniq):
        return np.zeros(len(want), np.int64), np.zeros(len(want), bool)
    pos = np.searchsorted(uniq, want).clip(0, len(uniq) - 1)
    return pos, uniq[pos] == want


# ---------------------------------------------------------------------------- nets
def _nets():
    import torch.nn as nn

    def conv_bn(cin, cout, stride=1):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout))
            self.skip = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.body(x) + self.skip(x))

    def resnet(width: int, drop: float = 0.3):
        """ResNet-18 layout without the stem's downsampling (48x48 faces are small already)."""
        w = [width, 2 * width, 4 * width, 8 * width]
        layers = [*conv_bn(1, w[0]), nn.ReLU(inplace=True)]
        cin = w[0]
        for i, c in enumerate(w):
            layers += [Block(cin, c, 1 if i == 0 else 2), Block(c, c, 1)]
            cin = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop), nn.Linear(cin, len(CLASSES))]
        return nn.Sequential(*layers)

    def vgg(width: int, drop: float = 0.4):
        """VGG layout (two 3x3 convs per stage, max-pooling, a wide dense head; no skip connections), the
        design behind FER2013's best published single nets: a second architecture whose mistakes differ
        from the ResNet's, so that out-of-fold labels averaged over both are better than either's."""
        w = [width, 2 * width, 4 * width, 8 * width]
        layers, cin = [], 1
        for c in w:
            layers += [*conv_bn(cin, c), nn.ReLU(inplace=True), *conv_bn(c, c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = c
        layers += [nn.Flatten(), nn.Dropout(drop), nn.Linear(cin * 3 * 3, 16 * width), nn.BatchNorm1d(16 * width),
                   nn.ReLU(inplace=True), nn.Dropout(drop), nn.Linear(16 * width, len(CLASSES))]
        return nn.Sequential(*layers)

    return {"resnet": resnet, "vgg": vgg}


def build(arch: str, width: int):
    return _nets()[arch](width)


def _scale(x):
    """uint8-valued faces -> roughly zero-mean unit-range input, the same for training and ONNX."""
    return (x / 255.0 - 0.5) / 0.25


# ---------------------------------------------------------------------------- train
def _augment(x, torch, F):
    """Random zoom/shift/turn/mirror, brightness/contrast and erasing, all on the GPU (x: B,1,48,48
    in 0..255). Ranges are wider than the student's `light` level: a teacher can afford them."""
    b, dev = x.shape[0], x.device
    u = lambda lo, hi: torch.empty(b, device=dev).uniform_(lo, hi)  # noqa: E731
    ang = u(-15, 15) * math.pi / 180
    s = torch.exp(u(math.log(0.85), math.log(1.18)))
    flip = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos * flip, -sin, u(-0.2, 0.2)], 1),
                         torch.stack([sin * flip, cos, u(-0.2, 0.2)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.7, 1.3).view(b, 1, 1, 1) + mean + u(-25, 25).view(b, 1, 1, 1)
    # random erasing (half the faces): a box of 2-20% of the face, filled with noise
    side = FACE_SIZE
    area = u(0.02, 0.2) * side * side
    ratio = torch.exp(u(math.log(0.3), math.log(3.3)))
    h = (area * ratio).sqrt().clamp(1, side - 1)
    w = (area / ratio).sqrt().clamp(1, side - 1)
    y0, x0 = u(0, 1) * (side - h), u(0, 1) * (side - w)
    r = torch.arange(side, device=dev).float()
    rows = (r.view(1, side, 1) >= y0.view(b, 1, 1)) & (r.view(1, side, 1) < (y0 + h).view(b, 1, 1))
    cols = (r.view(1, 1, side) >= x0.view(b, 1, 1)) & (r.view(1, 1, side) < (x0 + w).view(b, 1, 1))
    box = rows & cols
    box &= (torch.rand(b, device=dev) < 0.5).view(b, 1, 1)
    x = torch.where(box.unsqueeze(1), torch.rand_like(x) * 255, x)
    return x.clamp(0, 255)


def _evaluate(net, x, torch, batch=1024):
    """Flip-averaged and plain validation probabilities."""
    net.eval()
    plain, flip = [], []
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=x.is_cuda):
        for i in range(0, len(x), batch):
            xb = _scale(x[i:i + batch].float())
            plain.append(torch.softmax(net(xb).float(), -1))
            flip.append(torch.softmax(net(torch.flip(xb, (3,))).float(), -1))
    p, f = torch.cat(plain), torch.cat(flip)
    return p.cpu().numpy(), ((p + f) / 2).cpu().numpy()


def _torch(step: str):
    try:
        import torch
    except ImportError:
        raise UserError(f"`{step}` needs PyTorch (pip install torch); the lent GPU machines have it") from None
    return torch


def train(args) -> None:
    xtr, ytr = load(args.data, "train")
    xva, yva = load(args.data, "validation")
    torch = _torch("train")
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    held = np.zeros(0, np.int64)
    if args.folds:
        fold = fold_of(ytr, args.folds, face_keys(xtr))
        held = np.flatnonzero(fold == args.fold)  # labelled at the end, never trained on
        xheld, yheld = torch.from_numpy(xtr[held]).to(dev).unsqueeze(1), ytr[held]
        xtr, ytr = xtr[fold != args.fold], ytr[fold != args.fold]
    if args.limit:
        keep = np.random.default_rng(args.seed).permutation(len(xtr))[:args.limit]
        xtr, ytr = xtr[keep], ytr[keep]
    xtr = torch.from_numpy(xtr).to(dev).unsqueeze(1)
    ytr = torch.from_numpy(ytr).to(dev)
    xva_t = torch.from_numpy(xva).to(dev).unsqueeze(1)
    # channels-last feeds the GPU's tensor cores; on the CPU (smoke runs) torch 2.13's backward pass
    # crashed now and then with it (segfault in autograd, tiny batches), so the CPU keeps NCHW
    layout = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    net = build(args.arch, args.width).to(dev).to(memory_format=layout)
    ema = build(args.arch, args.width).to(dev).to(memory_format=layout)
    ema.load_state_dict(net.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    params = sum(p.numel() for p in net.parameters())
    decay, no_decay = [], []
    for p in net.parameters():
        (no_decay if p.ndim == 1 else decay).append(p)  # no weight decay on biases and BatchNorm
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    budget = args.minutes * 60
    t0 = time.perf_counter()
    step, epoch, lr = 0, 0, args.lr
    batch = min(args.batch, len(xtr))  # a tiny (smoke) set still takes steps; else no epoch would end
    ema_pairs = list(zip(ema.state_dict().values(), net.state_dict().values()))
    print(f"{args.arch} width {args.width}: {params / 1e6:.2f}M params, {len(xtr)} faces, {budget:.0f} s on {dev}",
          flush=True)
    done = False
    while not done:
        epoch += 1
        net.train()
        perm = torch.randperm(len(xtr), device=dev)
        tot, correct, n = 0.0, 0, 0
        for i in range(0, len(perm) - batch + 1, batch):
            frac = (time.perf_counter() - t0) / budget
            if frac >= 1:
                done = True
                break
            lr = args.lr * min(1.0, frac / 0.03) * 0.5 * (1 + math.cos(math.pi * frac))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[i:i + batch]
            xb = _augment(xtr[idx].float(), torch, F).contiguous(memory_format=layout)
            yb = ytr[idx]
            with torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == "cuda"):
                out = net(_scale(xb))
                loss = F.cross_entropy(out.float(), yb, label_smoothing=args.smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            d = min(args.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for e, p in ema_pairs:
                    if e.dtype.is_floating_point:
                        e.mul_(d).add_(p.detach(), alpha=1 - d)
                    else:
                        e.copy_(p)
            if step % 20 == 0:  # a sample of the steps: reading a number waits for the GPU
                tot += loss.item() * len(idx)
                correct += int((out.argmax(1) == yb).sum())
                n += len(idx)
        if epoch % args.report == 0 or done:
            _, va = _evaluate(net, xva_t, torch)
            print(f"epoch {epoch} t {time.perf_counter() - t0:.0f}s lr {lr:.4f} train loss {tot / max(n, 1):.3f} "
                  f"acc {correct / max(n, 1):.3f} val tta {np.mean(va.argmax(1) == yva):.4f}", flush=True)
    results = {}
    for name, m in (("raw", net), ("ema", ema)):
        p, f = _evaluate(m, xva_t, torch)
        results[name] = (np.mean(p.argmax(1) == yva), np.mean(f.argmax(1) == yva), p, f, m)
        print(f"{name}: val {results[name][0]:.4f}, flip tta {results[name][1]:.4f}", flush=True)
    keep = max(results, key=lambda k: results[k][1])
    acc, acc_tta, p, f, m = results[keep]
    weights = {}
    for k, v in m.state_dict().items():
        arr = v.detach().cpu().numpy()
        weights[f"w.{k}"] = arr.astype(np.float16) if v.dtype.is_floating_point else arr
    oof = {}
    if args.folds:
        hp, hf = _evaluate(m, xheld, torch)
        oof = dict(oof_idx=held, oof_probs=hp, oof_probs_tta=hf)
        print(f"fold {args.fold}/{args.folds}: {len(held)} held-out training faces labelled, "
              f"accuracy {np.mean(hf.argmax(1) == yheld):.4f} (flip tta)", flush=True)
    meta = dict(arch=args.arch, width=args.width, seed=args.seed, kept=keep, epochs=epoch, steps=step, params=params,
                folds=args.folds, fold=args.fold if args.folds else None, pack_sha256=sha256_file(args.data),
                val=float(acc), val_tta=float(acc_tta), minutes=args.minutes, lr=args.lr, batch=args.batch,
                smoothing=args.smoothing, wd=args.wd, ema=args.ema, device=str(torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"))
    np.savez(args.out, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), val_probs=p, val_probs_tta=f,
             val_y=yva, **oof, **weights)
    print(f"kept {keep}: {json.dumps(meta)} -> {args.out}", flush=True)


# ---------------------------------------------------------------------------- out-of-fold labels
def _load_run(f: Path):
    """(arrays, meta) of one `train` output; a missing or foreign file is one sentence, not a traceback."""
    if not Path(f).is_file():
        raise UserError(f"no trained net at {f}")
    try:
        d = np.load(f)  # plain arrays: allow_pickle stays False
        return d, json.loads(d["meta"].tobytes())
    except (OSError, ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
        raise UserError(f"{f} is not a `python -m models.gpu_teacher train` output ({type(exc).__name__})") from None


def _by_keys(keys: np.ndarray, probs: np.ndarray, pack_keys: np.ndarray, f: Path, pack_file: Path,
             every: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(pack positions, their probabilities) for answers keyed by face digest: every copy of a face in
    the pack gets its answer (identical pixels, identical answer). `every`: each pack face must have one
    (validation), else the run answered for another data set."""
    uniq, first = np.unique(keys, return_index=True)
    pos, hit = find_keys(uniq, pack_keys)
    if not np.isin(uniq, pack_keys).all() or (every and not hit.all()):
        raise UserError(f"{f} answered for faces that are not in {pack_file} (trained on another data set?)")
    return np.flatnonzero(hit), probs[first[pos[hit]]]


def merge_oof(files: list[Path], pack_file: Path, out: Path) -> dict:
    """k-fold runs (any mix of architectures and seeds) -> one soft label per training face: the mean
    of the flip-averaged answers of the nets that did NOT train on it. Why: a teacher that saw a face
    answers it from memory (93.5% right, mean top probability 0.88 on its own training faces), so a
    student distilled on those answers learns over-confidence, not the teacher's judgement."""
    xtr, ytr = load(pack_file, "train")
    total, count = np.zeros((len(ytr), len(CLASSES))), np.zeros(len(ytr), np.int64)
    val, folds_seen = [], {}
    pack_sha = sha256_file(pack_file)
    xva, yva = load(pack_file, "validation")
    train_keys, val_keys = face_keys(xtr), face_keys(xva)
    for f in files:
        d, meta = _load_run(f)
        if not meta.get("folds") or not {"oof_idx", "oof_keys"} & set(d.files):
            raise UserError(f"{f} was trained on every training face (no --folds): it has no out-of-fold answers")
        if "oof_keys" in d.files:  # a Keras run (models.train --folds): faces found by their pixels
            idx, probs = _by_keys(d["oof_keys"], d["oof_probs_tta"], train_keys, f, pack_file)
            _, vf = _by_keys(d["val_keys"], d["val_probs_tta"], val_keys, f, pack_file, every=True)
        else:
            idx, probs, vf = d["oof_idx"], d["oof_probs_tta"], d["val_probs_tta"]
            if meta.get("pack_sha256", pack_sha) != pack_sha or idx.max(initial=-1) >= len(ytr):
                raise UserError(f"{f} was trained on another pack than {pack_file}")
        total[idx] += probs
        count[idx] += 1
        val.append(vf)
        folds_seen.setdefault((meta["arch"], meta["width"], meta["folds"]), set()).add(meta["fold"])
    missing = int((count == 0).sum())
    if missing:
        groups = "; ".join(f"{a}{w} k={k}: folds {sorted(s)}" for (a, w, k), s in folds_seen.items())
        raise UserError(f"{missing} training faces have no out-of-fold answer ({groups}): train the missing folds")
    probs = (total / count[:, None]).astype(np.float32)
    va = np.mean(val, axis=0)
    report = dict(nets=len(files), groups={f"{a}{w} k={k}": sorted(s) for (a, w, k), s in folds_seen.items()},
                  oof_accuracy=float(np.mean(probs.argmax(1) == ytr)), oof_mean_top=float(probs.max(1).mean()),
                  val_accuracy_mean_of_nets=float(np.mean(va.argmax(1) == yva)), answers_per_face=float(count.mean()))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, keys=face_keys(xtr), probs=probs, y=ytr, labels=np.array(CLASSES),
             meta=np.frombuffer(json.dumps(report).encode(), np.uint8))
    print(f"wrote {out}: {json.dumps(report)}")
    return report


# ---------------------------------------------------------------------------- onnx
def to_onnx(files: list[Path], out: Path, calib: Path | None = None, calib_size: int = 500,
            temperature: float = 1.0) -> None:
    torch = _torch("onnx")
    nets, metas = [], []
    for f in files:
        d, meta = _load_run(f)
        if meta.get("kind") == "keras":
            raise UserError(f"{f} is a Keras k-fold run: its net is the emotion.keras beside it (`python -m models.ensemble` "
                            "averages Keras nets)")
        net = build(meta["arch"], meta["width"])
        sd = {k[2:]: torch.from_numpy(d[k].astype(np.float32) if d[k].dtype == np.float16 else d[k]) for k in d.files
              if k.startswith("w.")}
        net.load_state_dict(sd)
        nets.append(net.eval())
        metas.append(meta)

    class Contract(torch.nn.Module):
        """Raw NHWC 0..255 faces -> mean probability of the nets (the model contract)."""

        def __init__(self):
            super().__init__()
            self.nets = torch.nn.ModuleList(nets)

        def forward(self, x):
            x = _scale(x.permute(0, 3, 1, 2))
            return torch.stack([torch.softmax(n(x) / temperature, -1) for n in self.nets]).mean(0)

    model = Contract().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(2, FACE_SIZE, FACE_SIZE, 1),), str(out), input_names=["faces"], output_names=["probs"],
                      dynamic_axes={"faces": {0: "n"}, "probs": {0: "n"}}, opset_version=17, dynamo=False)
    ModelSpec(labels=list(CLASSES), arch="+".join(f"{m['arch']}{m['width']}" for m in metas), source_sha256=sha256_file(out),
              extra={"teachers": metas, "temperature": temperature, "made_by": "python -m models.gpu_teacher onnx"}).save(out.parent)
    print(f"wrote {out} and labels.json ({len(nets)} nets)")
    if calib is not None:
        # int8 through export's own ONNX quantiser (static QDQ, MinMax): ~3.5x faster as a teacher
        # on this CPU (167 against 47 faces/s for five nets), 0.25 points less accurate
        import tempfile

        from export.run import convert_onnx_int8

        x, _ = load(calib, "train")
        pick = np.random.default_rng(0).permutation(len(x))[:calib_size]
        int8 = out.with_name("emotion_int8.onnx")
        with tempfile.TemporaryDirectory() as work:
            convert_onnx_int8(out, int8, x[pick, :, :, None].astype(np.float32), Path(work), list(CLASSES))
        print(f"wrote {int8} (calibrated on {len(pick)} training faces)")


def run(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="FER2013 folders -> one .npz to carry")
    a.add_argument("--data", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("train", help="train one net for a fixed time (GPU if there is one)")
    a.add_argument("--data", type=Path, required=True, help="the .npz that `pack` wrote")
    a.add_argument("--out", type=Path, required=True, help=".npz with the kept weights and validation probabilities")
    a.add_argument("--arch", choices=("resnet", "vgg"), default="resnet",
                   help="resnet (ResNet-18 layout) or vgg (2 convs x 4 stages, BatchNorm after every layer and in the "
                        "dense head: an earlier VGG without it stuck at chance at lr 0.05)")
    a.add_argument("--width", type=int, default=48, help="first stage's channels (doubling per stage)")
    a.add_argument("--minutes", type=float, default=6.0, help="training time; the cosine schedule runs on this clock")
    a.add_argument("--lr", type=float, default=0.1)
    a.add_argument("--batch", type=int, default=256, help="the H200 runs used 256 with --lr 0.1")
    a.add_argument("--wd", type=float, default=5e-4)
    a.add_argument("--smoothing", type=float, default=0.0)
    a.add_argument("--ema", type=float, default=0.999)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--limit", type=int, default=0, help="first N training faces only (smoke tests)")
    a.add_argument("--report", type=int, default=5, help="validation print every N epochs")
    a.add_argument("--folds", type=int, default=0,
                   help="k-fold: train without one of K stratified folds of the training faces and write this net's "
                        "answers for that fold (out-of-fold labels; 0 = train on every face)")
    a.add_argument("--fold", type=int, default=None, help="with --folds: which fold (0..K-1) to hold out")
    a = sub.add_parser("oof", help="k-fold nets -> one out-of-fold soft label per training face (.npz for models.train)")
    a.add_argument("files", type=Path, nargs="+",
                   help="the .npz files of `train --folds K --fold I` runs and/or the fold_answers.npz of `models.train "
                        "--folds K --fold I` runs (any mix)")
    a.add_argument("--data", type=Path, required=True, help="the pack they trained on")
    a.add_argument("--out", type=Path, required=True, help="the soft-label .npz to write")
    a = sub.add_parser("onnx", help="trained .npz files -> one averaging ONNX model + labels.json")
    a.add_argument("files", type=Path, nargs="+")
    a.add_argument("--out", type=Path, required=True, help="the fp32 .onnx to write (labels.json goes beside it)")
    a.add_argument("--calib", type=Path, default=None,
                   help="a pack: also write emotion_int8.onnx beside it, calibrated on 500 of its training faces")
    a.add_argument("--temperature", type=float, default=1.0,
                   help="divide each net's logits by T before its softmax: softer targets for distillation")
    args = p.parse_args(argv)
    if args.cmd == "train":
        if args.folds and args.folds < 2:
            raise UserError(f"--folds {args.folds}: k-fold needs at least 2 folds (0 = train on every face)")
        if args.folds and args.fold is None:
            raise UserError(f"--folds {args.folds} needs --fold I (0..{args.folds - 1}): which fold this net leaves out")
        if args.fold is not None and not args.folds:
            raise UserError("--fold needs --folds K")
        if args.folds and not 0 <= args.fold < args.folds:
            raise UserError(f"--fold {args.fold} must be 0..{args.folds - 1} with --folds {args.folds}")
    if args.cmd == "pack":
        pack(args.data, args.out)
    elif args.cmd == "train":
        train(args)
    elif args.cmd == "oof":
        merge_oof(args.files, args.data, args.out)
    else:
        to_onnx(args.files, args.out, args.calib, temperature=args.temperature)


if __name__ == "__main__":
    sys.exit(cli_main(run))
