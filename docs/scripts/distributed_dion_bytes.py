"""Bytes per step of DistributedDion vs a plain gradient all-reduce, one GPT-2-small block.

c_attn (2304, 768), attention c_proj (768, 768), c_fc (3072, 768), MLP c_proj (768, 3072),
their biases and two LayerNorms, float32; random gradients, 3 steps on spawned gloo ranks;
prints ``stats()`` of rank 0 (the counts are exact, and the same on every rank and world size).

Run: ``python docs/scripts/distributed_dion_bytes.py [--ranks 0.25 32] [--worlds 2 4]``
"""

import argparse

from xpmat.distributed import run_ranks

SHAPES = [(2304, 768), (2304,), (768, 768), (768,), (3072, 768), (3072,), (768, 3072), (768,),
          (768,), (768,), (768,), (768,)]


def _worker(rank, world_size, rank_opt):
    import torch

    from xpmat.distributed import DistributedDion

    g = torch.Generator().manual_seed(rank)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    opt = DistributedDion(params, rank=rank_opt, lr=0.01)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return opt.stats()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", nargs="+", type=float, default=[0.25, 32])
    ap.add_argument("--worlds", nargs="+", type=int, default=[2, 4])
    a = ap.parse_args()
    print("| `rank` | world size | bytes per step | plain all-reduce | ratio |")
    print("|---|---|---|---|---|")
    for r in a.ranks:
        r = int(r) if r >= 1 else r
        for ws in a.worlds:
            st = run_ranks(_worker, ws, (r,), timeout=600)[0]
            print(f"| {r} | {ws} | {st['bytes_last_step']:,} | {st['plain_bytes_last_step']:,} | "
                  f"{st['compression']:.2f}× |")
