"""xpmat.distributed.DistributedDion: real gloo runs on 4 spawned ranks and a 2-rank sub-group.

One spawned run (spawning costs seconds) does every check on the 4-rank WORLD group and again on
a 2-rank group passed as ``process_group``: every step equals
single-process Dion on the averaged gradient, bytes per step equal (m + n) r per low-rank
matrix plus the whole 1-D gradients, parameters stay identical on all ranks, the 1-D gradient
is averaged exactly, a state_dict round trip resumes exactly, a rank without a gradient makes
every rank raise, and (2 ranks) an MLP on the digits data trains exactly like full-batch Dion.
"""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("torch")
import torch
import torch.distributed as dist

from xpmat.distributed import DistributedDion, run_ranks
from xpmat.optim import Dion

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

TOLS = {torch.float64: 1e-12, torch.float32: 1e-5}
STEPS = 4


def _groups(dtype):
    """Two param groups: default Dion (tall, conv, bias) and rank-2 rcqr with decay, mu=0,
    a 4×4 matrix where (m + n) r ≥ m n (sent whole) and a bias."""
    g = torch.Generator().manual_seed(0)
    shapes_a = [(12, 8), (5, 3, 2, 2), (8,)]
    shapes_b = [(6, 16), (4, 4), (6,)]
    mk = [[torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in ss]
          for ss in (shapes_a, shapes_b)]
    return mk


def _settings():
    return dict(lr=0.05, adamw_lr_ratio=0.2, momentum=0.9), dict(rank=2, momentum=0.0, weight_decay=0.1,
                                                      orthogonalize="rcqr", lr_scale=None)


def _optimizer(cls, tensors, **kw):
    params = [[torch.nn.Parameter(t.clone()) for t in ts] for ts in tensors]
    common, second = _settings()
    opt = cls([{"params": params[0]}, {"params": params[1], **second}], **common, **kw)
    return opt, [p for ps in params for p in ps]


def _grads(step, rank, params):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * (1 + rank)
            for p in params]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def _run(opt, params, steps, rank):
    for t in steps:
        for p, g in zip(params, _grads(t, rank, params), strict=True):
            p.grad = g
        opt.step()


def _check_equality(group, dtype):
    """Per step: distributed vs single-process Dion on the mean gradient; bytes; sync."""
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    out = {"err": 0.0, "bytes": [], "plain_bytes": [], "collectives": [], "desync": 0.0}
    tensors = _groups(dtype)
    opt, params = _optimizer(DistributedDion, tensors, process_group=group)
    ref, rparams = _optimizer(Dion, tensors)
    for t in range(STEPS):
        per_rank = [_grads(t, r, params) for r in range(world_size)]
        for p, g in zip(params, per_rank[rank], strict=True):
            p.grad = g
        for j, p in enumerate(rparams):
            p.grad = sum(pr[j] for pr in per_rank) / world_size
        if t == 2:
            saved = (copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in params])
        opt.step()
        ref.step()
        out["err"] = max(out["err"], *(_rel(p, q) for p, q in zip(params, rparams, strict=True)))
        st = opt.stats()
        for k in ("bytes", "plain_bytes", "collectives"):
            out[k].append(st[f"{k}_last_step"])
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        gathered = [torch.empty_like(flat) for _ in range(world_size)]
        dist.all_gather(gathered, flat, group=group)
        out["desync"] = max(out["desync"], *((x - flat).abs().max().item() for x in gathered))
        if t == 0:  # AdamW's first moment of each bias after one step is (1 − β₁) · mean gradient
            out["bias_err"] = max(_rel(opt.state[params[j]]["exp_avg"] / 0.1,
                                       sum(pr[j] for pr in per_rank) / world_size) for j in (2, 5))
    out["shapes"] = [(tuple(p.shape), opt.state[p]["Q"].shape[-1] if p.ndim > 1 else 0)
                     for p in params]
    out["stats"] = opt.stats()
    # resume from the state_dict saved before step 2: the same parameters, bit for bit
    opt2, params2 = _optimizer(DistributedDion, tensors, process_group=group)
    for p, v in zip(params2, saved[1], strict=True):
        p.data.copy_(v)
    opt2.load_state_dict(saved[0])
    _run(opt2, params2, range(2, STEPS), rank)
    out["resumed_equal"] = all(torch.equal(p, q) for p, q in zip(params, params2, strict=True))
    return out


def _check_maximize_closure(group):
    """maximize=True fed −G_i, stepping through a closure, equals Dion on the mean G."""
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    tensors = _groups(torch.float64)
    opt, params = _optimizer(DistributedDion, tensors, process_group=group, maximize=True)
    ref, rparams = _optimizer(Dion, tensors)
    for t in range(2):
        per_rank = [_grads(t, r, params) for r in range(world_size)]

        def closure(per_rank=per_rank, t=t):
            for p, g in zip(params, per_rank[rank], strict=True):
                p.grad = -g
            return torch.tensor(float(t))

        loss = opt.step(closure)
        for j, p in enumerate(rparams):
            p.grad = sum(pr[j] for pr in per_rank) / world_size
        ref.step()
    return {"err": max(_rel(p, q) for p, q in zip(params, rparams, strict=True)),
            "loss": loss.item()}


def _check_errors(group):
    """Rank 1 lacks one gradient: every rank of ``group`` raises; then bad arguments."""
    rank, out = dist.get_rank(group), {}
    opt, params = _optimizer(DistributedDion, _groups(torch.float64), process_group=group)
    for p, g in zip(params, _grads(0, rank, params), strict=True):
        p.grad = None if (rank == 1 and p.shape == (12, 8)) else g
    try:
        opt.step()
    except ValueError as e:
        out["missing_grad"] = str(e)
    for bad, exc in (({"rank": 0}, ValueError), ({"momentum": 1.5}, ValueError), ({"nonsense": 1}, TypeError),
                     ({"mu": 0.9}, TypeError),
                     ({"process_group": "world"}, TypeError), ({"check_consistency": 1}, TypeError)):
        try:
            DistributedDion([torch.nn.Parameter(torch.zeros(3, 3))], **bad)
        except exc as e:
            out[next(iter(bad))] = str(e)
    return out


def _digits_mlp(group, steps=40):
    """2-layer MLP, float64, full batch of 600 digits split evenly over the ranks."""
    from sklearn.datasets import load_digits

    rank, world_size = dist.get_rank(group), dist.get_world_size(group)

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X[:600] / 16.0)
    y = torch.tensor(y[:600])
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
              .double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    kw = dict(lr=0.2, rank=8, adamw_lr_ratio=0.05)
    opt = DistributedDion(models[0].parameters(), process_group=group, **kw)
    ref = Dion(models[1].parameters(), **kw)
    shard = slice(rank * 600 // world_size, (rank + 1) * 600 // world_size)
    losses = []
    for _ in range(steps):
        for model, o, sl in ((models[0], opt, shard), (models[1], ref, slice(None))):
            o.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[sl]), y[sl])
            loss.backward()
            o.step()
        with torch.no_grad():
            losses.append(torch.nn.functional.cross_entropy(models[0](X), y).item())
    err = max(_rel(p, q) for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True))
    acc = (models[0](X).argmax(1) == y).double().mean().item()
    return {"losses": losses, "err": err, "acc": acc}


def _worker(rank, world_size):
    """4 ranks on WORLD, then 2 of them on a sub-group (spawning costs seconds: one run only)."""
    world = {dt: _check_equality(dist.group.WORLD, dt) for dt in (torch.float64, torch.float32)}
    world["errors"] = _check_errors(dist.group.WORLD)
    world["maximize"] = _check_maximize_closure(dist.group.WORLD)
    pair = dist.new_group([0, 1])  # every rank must take part in creating it
    if rank > 1:
        return {4: world}
    sub = {dt: _check_equality(pair, dt) for dt in (torch.float64, torch.float32)}
    sub["errors"] = _check_errors(pair)
    sub["mlp"] = _digits_mlp(pair)
    return {4: world, 2: sub}


def _expected_bytes(shapes, itemsize):
    """(m + n) r per low-rank matrix, m n for the 4×4 (cheaper whole), numel for 1-D."""
    low = dense = 0
    for shape, r in shapes:
        n_el = 1
        for s in shape:
            n_el *= s
        dense += n_el
        if len(shape) >= 2 and (shape[0] + n_el // shape[0]) * r < n_el:
            low += (shape[0] + n_el // shape[0]) * r
        else:
            low += n_el
    return low * itemsize, dense * itemsize


@pytest.fixture(scope="module")
def runs():
    out = run_ranks(_worker, 4, timeout=120)
    return {4: [r[4] for r in out], 2: [r[2] for r in out[:2]]}


@pytest.fixture(params=[2, 4], ids=["2ranks", "4ranks"])
def results(request, runs):
    return request.param, runs[request.param]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_equals_single_process_dion_on_mean_gradient(results, dtype):
    _, res = results
    for r in res:
        assert r[dtype]["err"] < TOLS[dtype], r[dtype]["err"]
        assert r[dtype]["desync"] == 0.0  # every rank holds the same parameters, bit for bit


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_bytes_per_step_equal_formula(results, dtype):
    _, res = results
    itemsize = torch.empty((), dtype=dtype).element_size()
    low, dense = _expected_bytes(res[0][dtype]["shapes"], itemsize)
    # the ranks the test set: r = ceil(min(m, n) / 4) in group 1, r = 2 in group 2
    assert [r for _, r in res[0][dtype]["shapes"]] == [2, 2, 0, 2, 2, 0]
    assert low == itemsize * ((12 + 8) * 2 + (5 + 12) * 2 + 8 + (6 + 16) * 2 + 16 + 6)
    for r in res:
        assert r[dtype]["bytes"] == [low] * STEPS
        assert r[dtype]["plain_bytes"] == [dense] * STEPS
        # the consistency check (with the non-finite flags), the AdamW gradients, two rounds per
        # param group with Dion matrices (two groups here)
        assert r[dtype]["collectives"] == [1 + 1 + 2 * 2] * STEPS
        st = r[dtype]["stats"]
        assert st["steps"] == STEPS and st["bytes_total"] == STEPS * low
        assert st["plain_bytes_total"] == STEPS * dense
        assert st["control_bytes_last_step"] == 6 * 11 * 8  # 5 integers twice and a flag each
        assert st["compression"] == pytest.approx(dense / low)


def test_one_dim_gradients_are_averaged(results):
    _, res = results
    for r in res:
        assert r[torch.float64]["bias_err"] < 1e-14  # measured <= 3.5e-16
        assert r[torch.float32]["bias_err"] < 1e-6


def test_state_dict_resume_is_exact(results):
    _, res = results
    for r in res:
        assert r[torch.float64]["resumed_equal"] and r[torch.float32]["resumed_equal"]


def test_inconsistent_ranks_and_bad_arguments_raise(results):
    _, res = results
    for r in res:  # every rank raises, none hangs
        e = r["errors"]
        assert "parameter 0 of param group 0" in e["missing_grad"]
        assert "gradient on some ranks and none on others" in e["missing_grad"]
        assert "rank must be an int >= 1" in e["rank"]
        assert "momentum must lie in [0, 1)" in e["momentum"]
        assert "`mu` was renamed: momentum" in e["mu"]
        assert "nonsense" in e["nonsense"]
        assert "process_group must be" in e["process_group"]
        assert "check_consistency" in e["check_consistency"]


def test_maximize_and_closure(runs):
    for r in runs[4]:
        assert r["maximize"]["err"] < 1e-12
        assert r["maximize"]["loss"] == 1.0  # step returns the closure's value


def test_digits_mlp_trains_like_full_batch(runs):
    for r in runs[2]:  # the 2-rank sub-group (one MLP run keeps the file fast)
        m = r["mlp"]
        assert m["err"] < 1e-9  # mean of the two half-batch gradients = the full-batch gradient
        assert m["losses"][-1] < 0.1 * m["losses"][0], m["losses"]  # measured 2.19 -> 0.056
        assert m["acc"] > 0.95  # measured 0.983 on the 600 training digits


def test_process_group_not_initialized():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="process group is not initialized"):
        DistributedDion([torch.nn.Parameter(torch.zeros(3, 3))])
    with pytest.raises(TypeError, match="process_group must be"):
        DistributedDion([torch.nn.Parameter(torch.zeros(3, 3))], process_group=0)
