"""xpmat: matrix primitives of modern optimizers on any Array API library.

The public API, re-exported from the modules that define it; nothing else lives here.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xpmat")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

# -- orthogonalize (msign, msign_many, polar, orthonormalize, ns_schedule)
from xpmat.orthogonalize import msign, msign_many, ns_schedule, orthonormalize, polar

# -- iteration (power_iteration, orthogonal_iteration, power_iter1, randomized_*, nystrom_eigh)
# isort: split
from xpmat.iteration import (
    nystrom_eigh,
    orthogonal_iteration,
    power_iter1,
    power_iteration,
    randomized_eigh,
    randomized_svd,
)

# -- lowrank_eigh and matfun (lowrank_eigh_*, reproject_moments, lowrank_inv_root_apply, ggt_eigh, inv_root)
from xpmat.lowrank_eigh import (
    ggt_eigh,
    lowrank_eigh_truncate,
    lowrank_eigh_update,
    lowrank_inv_root_apply,
    reproject_moments,
)
from xpmat.matfun import inv_root

# -- kron and nmf (kron_rearrange, nearest_kron, kron_matmul, shampoo factors, i_divergence, nmf_*)
# isort: split
from xpmat.kron import (
    kron_matmul,
    kron_rearrange,
    nearest_kron,
    shampoo_factors,
    shampoo_kron,
)
from xpmat.nmf import (
    adafactor_factors,
    adafactor_second_moment,
    i_divergence,
    nmf,
    nmf_em_step,
    nmf_online_init,
    nmf_online_step,
    nmf_rank1,
)

__all__ = [
    "adafactor_factors",
    "adafactor_second_moment",
    "ggt_eigh",
    "i_divergence",
    "inv_root",
    "kron_matmul",
    "kron_rearrange",
    "lowrank_eigh_truncate",
    "lowrank_eigh_update",
    "lowrank_inv_root_apply",
    "msign",
    "msign_many",
    "nearest_kron",
    "nmf",
    "nmf_em_step",
    "nmf_online_init",
    "nmf_online_step",
    "nmf_rank1",
    "ns_schedule",
    "nystrom_eigh",
    "orthogonal_iteration",
    "orthonormalize",
    "polar",
    "power_iter1",
    "power_iteration",
    "randomized_eigh",
    "randomized_svd",
    "reproject_moments",
    "shampoo_factors",
    "shampoo_kron",
]
