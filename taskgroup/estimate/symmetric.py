"""Symmetric products x x^T in half the arithmetic of a matrix product.

The projection's second moments and the training Gram's diagonal blocks are products of a
matrix with itself. A matrix product computes both triangles of the result; BLAS's syrk
computes one. torch has no syrk, so on the CPU the product goes through SciPy's BLAS (on
the tensor's memory, without a copy) on one BLAS thread, and elsewhere (CUDA) through a
matrix product. Either way the result is exactly symmetric.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _blas():
    """SciPy's syrk by torch dtype and a controller of the BLAS threads, made at the first
    call: importing scipy.linalg takes a fifth of a second, which jobs that never form a
    symmetric product should not pay, and the controller inspects every loaded library."""
    from scipy.linalg import blas
    from threadpoolctl import ThreadpoolController

    return {torch.float32: blas.ssyrk, torch.float64: blas.dsyrk}, ThreadpoolController()


def row_gram(rows: torch.Tensor) -> torch.Tensor:
    """rows rows^T (n, n), exactly symmetric, of ``rows`` (n, m), in its dtype and on its
    device. Float32 and float64 rows on the CPU take one syrk (one triangle, mirrored; rows
    in neither row- nor column-major layout are copied first); any other input a matrix
    product, mirrored. The sums are those of a matrix product in another order: the two
    ways agree to rounding."""
    if rows.device.type != "cpu" or rows.dtype not in (torch.float32, torch.float64):
        return _mirrored(rows @ rows.T)
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        return rows.new_zeros(rows.shape[0], rows.shape[0])
    array = rows.detach().numpy()
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = rows.detach().contiguous().numpy()
    syrks, threads = _blas()
    syrk = syrks[rows.dtype]
    # One thread: OpenBLAS's syrk on two threads sums in another order than on one (its
    # threads share the inner dimension), and a job's result must not depend on its threads.
    with threads.limit(limits=1, user_api="blas"):
        # syrk forms a a^T (trans 0) or a^T a (trans 1) of a column-major a: rows itself
        # when it is column-major, else its transpose (column-major for row-major rows)
        if array.flags.f_contiguous:
            upper = syrk(1.0, array, trans=0)
        else:
            upper = syrk(1.0, array.T, trans=1)
    return _mirrored(torch.from_numpy(upper))


def _mirrored(product: torch.Tensor) -> torch.Tensor:
    """The upper triangle of ``product`` (n, n) and its mirror image below the diagonal."""
    return torch.triu(product) + torch.triu(product, diagonal=1).T
