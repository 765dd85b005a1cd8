"""Train a small character-level transformer with FSDP2 and xpmat's Muon; DCP checkpoints.

Every block is ``fully_shard``-ed, then the model: each parameter is a DTensor holding one row
shard per rank.  The hidden matrices (attention and MLP weights) run Muon — each matrix's
Newton–Schulz step once in the world, on an owner rank — and the embeddings, the head and the
1-D parameters run AdamW (a param group with ``algorithm="adamw"``), each rank on its shard.
The text is the source of Python's ``argparse`` module (shipped with every Python).

Run (any launcher that sets RANK / WORLD_SIZE; gloo on CPU, nccl on GPUs)::

    torchrun --nproc-per-node 2 docs/scripts/fsdp2_train.py --steps 200 --ckpt /tmp/ckpt
    torchrun --nproc-per-node 2 docs/scripts/fsdp2_train.py --steps 300 --ckpt /tmp/ckpt --resume

or without a launcher, on this machine's CPU: ``python docs/scripts/fsdp2_train.py --spawn 2``.
"""

from __future__ import annotations

import argparse
import math
import os

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import xpmat.optim as xo


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.fc2 = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x))))


class CharGPT(nn.Module):
    def __init__(self, vocab: int, d: int = 64, layers: int = 2, heads: int = 4, ctx: int = 64) -> None:
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def text_tokens() -> tuple[torch.Tensor, int]:
    text = open(argparse.__file__, encoding="utf-8").read()
    chars = sorted(set(text))
    return torch.tensor([chars.index(c) for c in text]), len(chars)


def batch(tokens: torch.Tensor, step: int, rank: int, world: int, size: int = 16, ctx: int = 64):
    """This rank's slice of the step's batch (the same global batch for any world size)."""
    g = torch.Generator().manual_seed(step)
    starts = torch.randint(0, len(tokens) - ctx - 1, (size,), generator=g)[rank::world]
    x = torch.stack([tokens[s:s + ctx] for s in starts])
    return x, torch.stack([tokens[s + 1:s + ctx + 1] for s in starts])


def train(rank: int, world: int, args: argparse.Namespace) -> float:
    device = torch.device("cuda", rank % torch.cuda.device_count()) if torch.cuda.is_available() else "cpu"
    tokens, vocab = text_tokens()
    torch.manual_seed(0)
    model = CharGPT(vocab).to(device)
    mesh = init_device_mesh(device.type if isinstance(device, torch.device) else device, (world,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    hidden = [p for n, p in model.named_parameters() if n.startswith("blocks") and p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if not (n.startswith("blocks") and p.ndim >= 2)]
    opt = xo.Muon([{"params": hidden},
                   {"params": rest, "algorithm": "adamw", "lr": 3e-3, "weight_decay": 0.0}],
                  lr=0.02, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / 20))
    start = 0
    if args.resume:
        msd, osd = get_state_dict(model, opt)
        state = {"model": msd, "optim": osd, "sched": sched.state_dict(), "step": 0}
        dcp.load(state, checkpoint_id=args.ckpt)
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        sched.load_state_dict(state["sched"])
        start = int(state["step"])
        if rank == 0:
            print(f"resumed at step {start}")
    loss = torch.tensor(math.nan)
    for step in range(start, args.steps):
        x, y = (t.to(device) for t in batch(tokens, step, rank, world))
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if rank == 0 and (step % args.log_every == 0 or step == args.steps - 1):
            sent = opt.sharded_stats["bytes_sent"] / 1e3
            print(f"step {step:4d}  loss {loss.item():.3f}  lr {sched.get_last_lr()[0]:.4f}  "
                  f"sent {sent:.0f} kB")
    if args.ckpt:
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd, "sched": sched.state_dict(), "step": args.steps},
                 storage_writer=dcp.FileSystemWriter(args.ckpt, overwrite=True))
    return float(loss.detach())


def _spawned(rank: int, world: int, args: argparse.Namespace) -> float:
    return train(rank, world, args)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ckpt", default="", help="DCP checkpoint folder (saved at the end)")
    ap.add_argument("--resume", action="store_true", help="start from --ckpt")
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--spawn", type=int, default=0, help="no launcher: spawn this many CPU ranks")
    args = ap.parse_args()
    if args.spawn:
        from xpmat.distributed import run_ranks

        run_ranks(_spawned, args.spawn, (args,), timeout=3600)
    else:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        train(dist.get_rank(), dist.get_world_size(), args)
        dist.destroy_process_group()
