"""The Muon family on a small character-level transformer (CPU): held-out loss and step time.

Text: the source of a fixed list of Python standard-library modules (shipped with every Python;
the last 10 % of characters held out).  Model: 2 pre-LayerNorm blocks, width 64, 4 heads,
context 64, tied nothing; the attention records each head's largest logit (for QK-clip).
Hidden matrices go to the method under test; embeddings, the output head and the 1-D
parameters to AdamW (``algorithm="adamw"`` group, lr 3e-3) in every run, so only the hidden
matrices' optimizer differs.  ``--steps`` steps of batch 32, ``--seeds`` seeds, 2 torch threads;
the optimizer step (with QK-clip where used) is timed alone: median over the steps (mean over
seeds) and the fastest step.

Run: ``PYTHONPATH=src python docs/scripts/muon_family_charlm.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import statistics
import time

import torch

import xpmat.optim as xo

MODULES = ["argparse", "collections", "dataclasses", "functools", "inspect", "json.decoder",
           "logging", "pathlib", "statistics", "textwrap", "typing", "unittest.case"]


def corpus() -> str:
    return "\n".join(inspect.getsource(importlib.import_module(m)) for m in MODULES)


class Block(torch.nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d, bias=False) for _ in range(4))
        self.up, self.down = torch.nn.Linear(d, 4 * d, bias=False), torch.nn.Linear(4 * d, d, bias=False)
        self.max_logits = torch.zeros(heads)

    def forward(self, x):
        b, t, d = x.shape
        y = self.ln1(x)
        q, k, v = (f(y).view(b, t, self.h, self.dh).transpose(1, 2) for f in (self.q, self.k, self.v))
        s = q @ k.transpose(-2, -1) / self.dh**0.5
        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        self.max_logits = s.detach().amax(dim=(0, 2, 3))
        x = x + self.o((s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.down(torch.nn.functional.gelu(self.up(self.ln2(x))))


class CharLM(torch.nn.Module):
    def __init__(self, vocab: int, d: int = 64, heads: int = 4, layers: int = 2, ctx: int = 64):
        super().__init__()
        self.emb, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Parameter(torch.zeros(ctx, d))
        self.blocks = torch.nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln, self.head = torch.nn.LayerNorm(d), torch.nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.emb(idx) + self.pos[: idx.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


METHODS = {
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0),
    "Muon": lambda ps: xo.Muon(ps, lr=0.02),
    "Muon, Gram NS + cautious wd": lambda ps: xo.Muon(ps, lr=0.02, use_gram_newton_schulz=True,
                                                      weight_decay=0.1, cautious_weight_decay=True),
    "Muon + QK-clip (τ = 30)": lambda ps: xo.Muon(ps, lr=0.02),
    "NorMuon": lambda ps: xo.NorMuon(ps, lr=0.02),
    "Dion2 (f = 0.5)": lambda ps: xo.Dion2(ps, lr=0.02, fraction=0.5),
}


def run(name: str, seed: int, text: torch.Tensor, vocab: int, steps: int) -> tuple[float, float, float]:
    torch.manual_seed(seed)
    model = CharLM(vocab)
    hidden = [p for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("blocks")]
    other = [p for n, p in model.named_parameters() if not (p.ndim == 2 and n.startswith("blocks"))]
    if name == "AdamW":
        opt = METHODS[name](model.parameters())
    else:
        opt = METHODS[name]([{"params": hidden},
                             {"params": other, "algorithm": "adamw", "lr": 3e-3, "betas": (0.9, 0.95)}])
    split = int(0.9 * len(text))
    train, held = text[:split], text[split:]
    gen = torch.Generator().manual_seed(seed)

    def batch(src, n=32, ctx=64):
        i = torch.randint(0, len(src) - ctx - 1, (n,), generator=gen)
        return torch.stack([src[j:j + ctx] for j in i]), torch.stack([src[j + 1:j + ctx + 1] for j in i])

    times = []
    for _ in range(steps):
        x, y = batch(train)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        t0 = time.perf_counter()
        opt.step()
        if "QK-clip" in name:
            for blk in model.blocks:
                xo.qk_clip_(blk.q.weight, blk.k.weight, blk.max_logits, tau=30.0)
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        torch.manual_seed(1234)
        xs = [batch(held) for _ in range(8)]
        val = statistics.fmean(float(torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()))
                               for x, y in xs)
    return val, 1e3 * statistics.median(times), 1e3 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    raw = corpus()
    chars = sorted(set(raw))
    text = torch.tensor([chars.index(c) for c in raw])
    print(f"{len(raw)} characters, vocabulary {len(chars)}, {args.steps} steps, {args.seeds} seeds")
    print("| method | held-out loss (mean ± sd over seeds) | optimizer step, median / min (ms) |")
    print("|---|---|---|")
    for name in METHODS:
        res = [run(name, s, text, len(chars), args.steps) for s in range(args.seeds)]
        vals = [r[0] for r in res]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        med, low = statistics.fmean(r[1] for r in res), min(r[2] for r in res)
        print(f"| {name} | {statistics.fmean(vals):.3f} ± {sd:.3f} | {med:.1f} / {low:.1f} |", flush=True)


if __name__ == "__main__":
    main()
