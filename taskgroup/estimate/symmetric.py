"""Symmetric products x x^T in half the arithmetic of a matrix product, and the top
eigenpairs of a symmetric matrix without the others.

The projection's second moments and the training Gram's diagonal blocks are products of a
matrix with itself. A matrix product computes both triangles of the result; BLAS's syrk
computes one. torch has no syrk, so on the CPU the product goes through SciPy's BLAS (on
the tensor's memory, without a copy) on one BLAS thread, and elsewhere (CUDA) through a
matrix product. Either way the result is exactly symmetric.

The eigen basis and the compressed curvature keep a few eigenvectors of largest
eigenvalue (a tenth to a third of them). torch's eigh computes all of them; LAPACK's
syevr (through SciPy, on one thread) computes only the ones asked for, by index or by
value, after the same reduction to tridiagonal form. On CUDA, torch's eigh, cut.
"""

from __future__ import annotations

import contextlib
import functools

import torch


@functools.cache
def _blas():
    """SciPy's syrk by torch dtype, a controller of the BLAS threads and SciPy's eigh, made
    at the first call: importing scipy.linalg takes a fifth of a second, which jobs that
    never form a symmetric product should not pay, and the controller inspects every loaded
    library."""
    from scipy.linalg import blas, eigh
    from threadpoolctl import ThreadpoolController

    return {torch.float32: blas.ssyrk, torch.float64: blas.dsyrk}, ThreadpoolController(), eigh


# Depth of the one_blas_thread blocks entered: only the outermost one limits the threads.
_single_thread_depth = 0


@contextlib.contextmanager
def one_blas_thread():
    """A block in which SciPy's BLAS and LAPACK run on one thread. Reentrant: a caller that
    makes many symmetric products or eigendecompositions enters it once around them, and
    theirs then cost nothing more (the limit inspects every loaded library, a twentieth of
    a millisecond each time)."""
    global _single_thread_depth
    limit = (contextlib.nullcontext() if _single_thread_depth
             else _blas()[1].limit(limits=1, user_api="blas"))
    with limit:
        _single_thread_depth += 1
        try:
            yield
        finally:
            _single_thread_depth -= 1


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
    syrks, _, _ = _blas()
    syrk = syrks[rows.dtype]
    # One thread: OpenBLAS's syrk on two threads sums in another order than on one (its
    # threads share the inner dimension), and a job's result must not depend on its threads.
    with one_blas_thread():
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


def top_eigenpairs(matrix: torch.Tensor, count: int | None = None, above: float | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The eigenvalues (r,) and eigenvectors (m, r, as columns) of the symmetric ``matrix``
    (m, m), float64, in ascending order like torch.linalg.eigh: the ``count`` of largest
    eigenvalue, or those of eigenvalue above ``above`` (exactly one of the two). Only the
    lower triangle is read. On the CPU only these are computed (LAPACK syevr on one thread,
    so that the result does not depend on the job's threads); elsewhere all of them, then
    cut. Raises ValueError unless exactly one of ``count`` (0 to m) and ``above`` is
    given."""
    size = matrix.shape[0]
    if (count is None) == (above is None) or (count is not None and not 0 <= count <= size):
        raise ValueError(f"top_eigenpairs: give count (0 to {size}) or above, not "
                         f"count={count} and above={above}")
    matrix = matrix.double()
    if count == 0 or size == 0:
        return matrix.new_zeros(0), matrix.new_zeros(size, 0)
    if matrix.device.type != "cpu":
        values, vectors = torch.linalg.eigh(matrix)
        keep = (slice(size - count, None) if count is not None
                else torch.nonzero(values > above).squeeze(1))
        return values[keep], vectors[:, keep]
    _, _, eigh = _blas()
    subset = ({"subset_by_index": [size - count, size - 1]} if count is not None
              else {"subset_by_value": [float(above), float("inf")]})
    with one_blas_thread():
        values, vectors = eigh(matrix.detach().numpy(), lower=True, driver="evr",
                               check_finite=False, **subset)
    return torch.from_numpy(values), torch.from_numpy(vectors)
