"""Newton–Schulz in float32, in bf16 and with ``compute_dtype="auto"`` on this machine.

``python docs/scripts/ns_precision.py [D] [LAYERS] [DEVICE]`` (default 128 4 cpu; one thread on
a CPU) times ``xpmat.msign_many`` (5 Polar Express steps, as Muon) on the layer matrices of a
GPT of width D (per layer qkv 3D×D, proj D×D, fc 4D×D, fc2 D×4D; D = 128, 4 layers is the
char-GPT of docs/scripts/optim_step_cpu.py), float32 input, in float32, in bf16 and in ``"auto"``
(the Muon family's default: per call, docs/optim.md "Newton–Schulz precision"); it prints the
min over 15 calls of each and whether the device has native bf16.  On a CPU the time is the thread's
CPU time (``time.thread_time``: a shared machine's other processes do not count); on CUDA the
wall time after a synchronize.  ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` (or ``AVX512_CORE``,
``AVX2``) caps the kernels oneDNN may use, to see a CPU without AMX (or without bf16).
"""

import sys
import time

import torch

from xpmat import _array, msign_many


def timed(mats, cdt, dev, reps=15):
    """Min time (ms) of one ``msign_many`` call over ``reps`` calls, after one warm-up."""
    clock = time.thread_time if dev == "cpu" else time.perf_counter
    best = float("inf")
    for _ in range(reps + 1):
        t = clock()
        msign_many(mats, compute_dtype=cdt)
        if dev != "cpu":
            torch.cuda.synchronize()
        best = min(best, clock() - t)
    return 1e3 * best


def main(d=128, layers=4, dev="cpu"):
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    shapes = ((3 * d, d), (d, d), (4 * d, d), (d, 4 * d))
    mats = [torch.randn(s, generator=gen).to(dev) for _ in range(layers) for s in shapes]
    f32, bf16, auto = (timed(mats, cdt, dev) for cdt in (None, "bfloat16", "auto"))
    native = _array.fast_bfloat16(mats[0], _array.array_namespace(mats[0]))
    print(f"{d=} {layers=} {dev}: float32 {f32:.2f} ms, bf16 {bf16:.2f} ms (bf16/float32 {bf16 / f32:.2f}), "
          f"auto {auto:.2f} ms; native bf16: {native}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]), *sys.argv[3:4])
