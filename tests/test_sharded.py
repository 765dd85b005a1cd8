"""Every xpmat.optim class on DTensor parameters (FSDP2 Shard(0), uneven, HSDP, tensor-parallel
Shard(1)) mixed with a plain tensor, against the unsharded run, on spawned gloo ranks; DCP
checkpoints (round trip, resharding 2 -> 1 and 2 -> 4).  Workers: tests/sharded_cases.py."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("torch built without torch.distributed", allow_module_level=True)

import sharded_cases as sc  # noqa: E402

from xpmat.distributed import run_ranks  # noqa: E402

pytestmark = pytest.mark.distributed

# Local (elementwise) steps equal the unsharded run bitwise; so do whole-matrix steps on their
# owner (the same math on the same whole matrix).  ExponentiatedGradient's hypentropy mirror
# calls asinh / cosh / sinh, whose vectorized and scalar loops in torch round differently by
# an ulp, so a shard's tail differs from the same entries inside a longer loop: 1 ulp allowed.
# Dion's sharded algorithm sums Bᵀ P over the row blocks (an all-reduce) where unsharded Dion
# multiplies the whole matrix: float32 rounding of that sum, entries of order 1.
# The workers run the gated foreach kernels (what a GPU runs: bitwise the core); on the CPU path
# AdamW and SGD run torch's fused kernels on local shards while a parameter with an empty shard
# steps by the core on its owner: one rounding apart there (HOST_TOL, float32 entries of order 1).
ULP_TOL = {"ExponentiatedGradient": 2e-7, "Dion": 1e-6, "Dion_tensor": 1e-6}
HOST_TOL = {"AdamW": 3e-7, "SGD": 3e-7, "Muon": 0.0}


@pytest.fixture(scope="module")
def two_ranks():
    return run_ranks(sc.compare, 2, (list(sc.CLASSES),), timeout=300)


def _check(results: list[dict], names: list[str], tol: dict[str, float] = ULP_TOL) -> None:
    for name in names:
        r = results[0][name]
        bad = {k: v for k, v in r["diff"].items() if v > tol.get(name, 0.0)}
        assert not bad, f"{name}: sharded differs from unsharded: {bad}"
        assert r["finite"]
        keys = [x[name]["keys"] for x in results]
        assert all(k == keys[0] for k in keys), f"{name}: state keys differ across ranks: {keys}"
        assert all(k for k in keys[0].values()), f"{name}: a parameter has no state"


def test_every_class_two_ranks(two_ranks):
    _check(two_ranks, list(sc.CLASSES))


def test_each_matrix_stepped_once_in_the_world(two_ranks):
    """Whole-matrix methods: the world runs one step per DTensor matrix (no redundancy);
    local methods step only the parameter with an empty shard (``tiny``, 1 row on 2 ranks) on
    an owner, so that every rank keeps its state."""
    n_all = len(sc.SHAPES)
    n_mats = sum(len(s) >= 2 for s, _ in sc.SHAPES.values())
    for name in sc.CLASSES:
        last = [x[name]["stats"][-1] for x in two_ranks]
        steps = sum(s["whole_matrix_steps"] for s in last)
        if name in sc.LOCAL_OWNED:
            assert steps == sc.LOCAL_OWNED[name], (name, steps)
        elif name in ("Dion", "Dion_tensor"):  # row-sharded: only tiny (empty shard), w_tp (Shard(1))
            assert steps == 2, (name, steps)
        else:
            matrix_only = name not in ("AdaGrad_full", "Adafactor", "LRE", "SteepestDescent")
            assert steps == (n_mats if matrix_only else n_all), (name, steps)
            assert all(s["whole_matrix_steps"] >= 1 for s in last), f"{name}: an idle rank"


@pytest.mark.slow
def test_four_ranks_and_hsdp():
    names = ["AdamW", "Muon", "Shampoo", "SphereSGD"]
    _check(run_ranks(sc.compare, 4, (names,), timeout=300), names)
    hsdp = run_ranks(sc.compare, 4, (names, 3, True), timeout=300)
    _check(hsdp, names)
    steps = [x["Muon"]["stats"][-1]["whole_matrix_steps"] for x in hsdp]
    assert sum(steps) == 6 and min(steps) >= 1, f"HSDP: whole-matrix steps per rank {steps}"


@pytest.mark.parametrize("path", ["auto", "fused"], ids=["cpu-path", "device-path"])
def test_nonfinite_shard_skips_the_whole_parameter(path):
    """A NaN in one rank's shard skips the parameter on every rank, as unsharded; on the CPU
    path (host reads, fused kernels) and on a GPU's device path (per-parameter fused calls,
    forced here on the CPU) too."""
    names = ["AdamW", "Muon", "SGD"]
    out = run_ranks(sc.compare, 2, (names, 2, False, 0, "cpu", path), timeout=300)
    _check(out, names, HOST_TOL)
    for name in names:
        assert out[0][name]["moved"] > 0, name


@pytest.mark.slow
def test_dcp_round_trip_and_resharding():
    """3 steps + DCP save + load into fresh model and optimizer + 3 steps == 6 steps, bitwise;
    the checkpoint of 2 ranks loads on 1 and on 4 with the same next step."""
    names = ["Muon", "AdamW", "Shampoo", "Dion"]
    ckpt = sc.tmpdir()
    res = run_ranks(sc.dcp_round_trip, 2, (names, ckpt), timeout=300)
    for name in names:
        assert res[0][name]["diff"] == 0.0 and res[1][name]["diff"] == 0.0, name
        assert res[0][name]["after4"] != res[0][name]["at3"]  # the step moved the parameters
    for ws in (1, 4):
        out = run_ranks(sc.dcp_reshard, ws, (names, ckpt), timeout=300)
        for name in names:
            got, ref = out[0][name], res[0][name]["after4"]
            err = max(float((torch.tensor(got[k]) - torch.tensor(ref[k])).abs().max()) for k in ref)
            assert err <= ULP_TOL.get(name, 0.0), f"{name}: loaded on {ws} ranks, next step differs by {err}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL)")
def test_sharded_on_cuda_nccl_one_rank():
    """The GPU single-rank path: every class on CUDA DTensors over NCCL equals the unsharded run
    (the multi-rank paths are the gloo tests above)."""
    _check(run_ranks(sc.compare, 1, (list(sc.CLASSES), 3, False, None, "cuda"), backend="nccl",
                     timeout=300), list(sc.CLASSES))


@pytest.mark.slow
def test_fsdp2_training_example_runs_and_resumes(tmp_path):
    """docs/scripts/fsdp2_train.py (the docs' FSDP2 example): trains on 2 spawned CPU ranks,
    saves a DCP checkpoint, and a second run resumes from it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = str(root / "docs" / "scripts" / "fsdp2_train.py")
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    ckpt = str(tmp_path / "ckpt")
    first = subprocess.run([sys.executable, script, "--spawn", "2", "--steps", "3", "--log-every", "1",
                            "--ckpt", ckpt], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "step    2" in first.stdout
    second = subprocess.run([sys.executable, script, "--spawn", "2", "--steps", "4", "--log-every", "1",
                             "--ckpt", ckpt, "--resume"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed at step 3" in second.stdout and "step    3" in second.stdout
