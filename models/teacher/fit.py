"""Train one teacher net for a fixed number of minutes (`python -m models.gpu_teacher train`).

Why the schedule runs on the clock: a lent GPU machine is held for a fixed time, so a run must end
inside it whatever the card; the learning rate is a function of the fraction of the time spent
(a 3% warm-up, then cosine to zero). A weight average (EMA) is kept beside the net, and whichever of
the two scores better on validation with flip TTA is written: its weights (float16), its validation
probabilities and, for a k-fold run, its answers for the fold it never trained on, in one .npz.
Augmentation runs on the GPU, with wider ranges than the student's: a teacher can afford them.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.core.contract import FACE_SIZE, sha256_file
from models.data import face_keys
from models.teacher.folds import fold_of
from models.teacher.nets import build, import_torch, scale
from models.teacher.pack import load


def augment(x, torch, F):
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


def evaluate(net, x, torch, batch=1024):
    """Flip-averaged and plain validation probabilities."""
    net.eval()
    plain, flip = [], []
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=x.is_cuda):
        for i in range(0, len(x), batch):
            xb = scale(x[i:i + batch].float())
            plain.append(torch.softmax(net(xb).float(), -1))
            flip.append(torch.softmax(net(torch.flip(xb, (3,))).float(), -1))
    p, f = torch.cat(plain), torch.cat(flip)
    return p.cpu().numpy(), ((p + f) / 2).cpu().numpy()


@dataclass
class Faces:
    """One run's faces on its device: training (fold and --limit taken out), validation, the held-out fold."""
    x: Any
    y: Any
    val_x: Any
    val_y: np.ndarray
    held: np.ndarray  #: pack positions of the held-out fold's faces (empty without --folds)
    held_x: Any = None
    held_y: np.ndarray | None = None


@dataclass
class Nets:
    """The net being trained, its weight average (EMA), their optimiser and memory layout."""
    net: Any
    ema: Any
    opt: Any
    layout: Any
    params: int
    pairs: list  #: (EMA tensor, net tensor) of every state entry


@dataclass
class Clock:
    """The run's time budget and where it stands: the schedule is a function of the time spent."""
    budget: float
    lr: float
    t0: float
    step: int = 0
    epoch: int = 0


def _faces(args, torch, dev, xtr, ytr, xva, yva) -> Faces:
    """--folds and --limit applied (numpy), then every set moved to the device as N,1,48,48."""
    held = np.zeros(0, np.int64)
    xheld = yheld = None
    if args.folds:
        fold = fold_of(ytr, args.folds, face_keys(xtr))
        held = np.flatnonzero(fold == args.fold)  # labelled at the end, never trained on
        xheld, yheld = torch.from_numpy(xtr[held]).to(dev).unsqueeze(1), ytr[held]
        xtr, ytr = xtr[fold != args.fold], ytr[fold != args.fold]
    if args.limit:
        keep = np.random.default_rng(args.seed).permutation(len(xtr))[:args.limit]
        xtr, ytr = xtr[keep], ytr[keep]
    return Faces(torch.from_numpy(xtr).to(dev).unsqueeze(1), torch.from_numpy(ytr).to(dev),
                 torch.from_numpy(xva).to(dev).unsqueeze(1), yva, held, xheld, yheld)


def _nets(args, torch, dev) -> Nets:
    """The net, its EMA twin (same start, no gradients) and SGD with Nesterov momentum."""
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
    return Nets(net, ema, opt, layout, params, list(zip(ema.state_dict().values(), net.state_dict().values())))


def _step(nets: Nets, xb, yb, smoothing: float, torch, F, dev):
    """One optimiser step on a batch (bf16 autocast on a GPU); (logits, loss)."""
    with torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == "cuda"):
        out = nets.net(scale(xb))
        loss = F.cross_entropy(out.float(), yb, label_smoothing=smoothing)
    nets.opt.zero_grad(set_to_none=True)
    loss.backward()
    nets.opt.step()
    return out, loss


def _update_ema(nets: Nets, d: float, torch) -> None:
    """EMA <- d x EMA + (1 - d) x net for float state (BatchNorm's counters are copied)."""
    with torch.no_grad():
        for e, p in nets.pairs:
            if e.dtype.is_floating_point:
                e.mul_(d).add_(p.detach(), alpha=1 - d)
            else:
                e.copy_(p)


def _epoch(args, nets: Nets, clock: Clock, faces: Faces, batch: int, torch, F, dev) -> tuple[bool, float, int, int]:
    """One pass over the shuffled training faces, cut short when the time is up:
    (time up?, sampled loss sum, sampled right answers, sampled faces)."""
    nets.net.train()
    perm = torch.randperm(len(faces.x), device=dev)
    tot, correct, n = 0.0, 0, 0
    for i in range(0, len(perm) - batch + 1, batch):
        frac = (time.perf_counter() - clock.t0) / clock.budget
        if frac >= 1:
            return True, tot, correct, n
        clock.lr = args.lr * min(1.0, frac / 0.03) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in nets.opt.param_groups:
            g["lr"] = clock.lr
        idx = perm[i:i + batch]
        xb = augment(faces.x[idx].float(), torch, F).contiguous(memory_format=nets.layout)
        yb = faces.y[idx]
        out, loss = _step(nets, xb, yb, args.smoothing, torch, F, dev)
        clock.step += 1
        _update_ema(nets, min(args.ema, (1 + clock.step) / (10 + clock.step)), torch)
        if clock.step % 20 == 0:  # a sample of the steps: reading a number waits for the GPU
            tot += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            n += len(idx)
    return False, tot, correct, n


def _fit(args, nets: Nets, clock: Clock, faces: Faces, batch: int, torch, dev) -> None:
    """Epochs until the time is up, validation printed every --report epochs and at the end."""
    import torch.nn.functional as F

    done = False
    while not done:
        clock.epoch += 1
        done, tot, correct, n = _epoch(args, nets, clock, faces, batch, torch, F, dev)
        if clock.epoch % args.report == 0 or done:
            _, va = evaluate(nets.net, faces.val_x, torch)
            print(f"epoch {clock.epoch} t {time.perf_counter() - clock.t0:.0f}s lr {clock.lr:.4f} train loss {tot / max(n, 1):.3f} "
                  f"acc {correct / max(n, 1):.3f} val tta {np.mean(va.argmax(1) == faces.val_y):.4f}", flush=True)


def _kept(nets: Nets, faces: Faces, torch):
    """The raw net or its EMA, whichever scores better on validation with flip TTA:
    (name, accuracy, accuracy with TTA, plain probabilities, TTA probabilities, the net)."""
    results = {}
    for name, m in (("raw", nets.net), ("ema", nets.ema)):
        p, f = evaluate(m, faces.val_x, torch)
        results[name] = (np.mean(p.argmax(1) == faces.val_y), np.mean(f.argmax(1) == faces.val_y), p, f, m)
        print(f"{name}: val {results[name][0]:.4f}, flip tta {results[name][1]:.4f}", flush=True)
    keep = max(results, key=lambda k: results[k][1])
    return (keep, *results[keep])


def _save(args, nets: Nets, clock: Clock, faces: Faces, torch, dev) -> None:
    """The kept net's weights (float16), validation answers, fold answers and a meta record -> args.out."""
    keep, acc, acc_tta, p, f, m = _kept(nets, faces, torch)
    weights = {}
    for k, v in m.state_dict().items():
        arr = v.detach().cpu().numpy()
        weights[f"w.{k}"] = arr.astype(np.float16) if v.dtype.is_floating_point else arr
    oof = {}
    if args.folds:
        hp, hf = evaluate(m, faces.held_x, torch)
        oof = dict(oof_idx=faces.held, oof_probs=hp, oof_probs_tta=hf)
        print(f"fold {args.fold}/{args.folds}: {len(faces.held)} held-out training faces labelled, "
              f"accuracy {np.mean(hf.argmax(1) == faces.held_y):.4f} (flip tta)", flush=True)
    meta = dict(arch=args.arch, width=args.width, seed=args.seed, kept=keep, epochs=clock.epoch, steps=clock.step,
                params=nets.params, folds=args.folds, fold=args.fold if args.folds else None,
                pack_sha256=sha256_file(args.data), val=float(acc), val_tta=float(acc_tta), minutes=args.minutes,
                lr=args.lr, batch=args.batch, smoothing=args.smoothing, wd=args.wd, ema=args.ema,
                device=str(torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"))
    np.savez(args.out, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), val_probs=p, val_probs_tta=f,
             val_y=faces.val_y, **oof, **weights)
    print(f"kept {keep}: {json.dumps(meta)} -> {args.out}", flush=True)


def train(args) -> None:
    """One net from the pack `args.data` for `args.minutes`, written to `args.out` (see the module docstring)."""
    xtr, ytr = load(args.data, "train")
    xva, yva = load(args.data, "validation")
    torch = import_torch("train")
    torch.manual_seed(args.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    faces = _faces(args, torch, dev, xtr, ytr, xva, yva)
    nets = _nets(args, torch, dev)
    clock = Clock(budget=args.minutes * 60, lr=args.lr, t0=time.perf_counter())
    batch = min(args.batch, len(faces.x))  # a tiny (smoke) set still takes steps; else no epoch would end
    print(f"{args.arch} width {args.width}: {nets.params / 1e6:.2f}M params, {len(faces.x)} faces, {clock.budget:.0f} s on {dev}",
          flush=True)
    _fit(args, nets, clock, faces, batch, torch, dev)
    _save(args, nets, clock, faces, torch, dev)
