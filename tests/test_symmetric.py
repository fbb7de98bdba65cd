import pytest
import torch
from threadpoolctl import threadpool_limits

from taskgroup.estimate.symmetric import row_gram, top_eigenpairs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["row-major", "column-major", "strided"])
def test_row_gram_is_the_symmetric_product_in_any_layout(dtype, layout):
    """rows rows^T, exactly symmetric, from one triangle (syrk) for row- and column-major
    rows, and from a matrix product for any other layout, in the rows' dtype."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(40, 70, dtype=dtype, generator=generator)
    # column-major: (70, 40) whose columns are contiguous; strided: neither
    rows = {"row-major": base[:7], "column-major": base.T, "strided": base[::2, ::3]}[layout]
    product = row_gram(rows)
    assert product.dtype == dtype and product.shape == (rows.shape[0], rows.shape[0])
    assert torch.equal(product, product.T)
    expected = rows.double() @ rows.double().T
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(product.double(), expected, rtol=tolerance, atol=tolerance)


def test_row_gram_of_no_rows_or_no_columns_is_zeros():
    assert row_gram(torch.zeros(0, 5)).shape == (0, 0)
    assert torch.equal(row_gram(torch.zeros(3, 0, dtype=torch.float64)),
                       torch.zeros(3, 3, dtype=torch.float64))


def test_row_gram_does_not_depend_on_the_thread_count():
    """The same bits with two BLAS threads around the call as with one: a job's results
    must not depend on its threads (syrk's own threads would split its sums)."""
    rows = torch.randn(3000, 257, generator=torch.Generator().manual_seed(1)).T
    assert torch.equal(*_on_one_and_two_blas_threads(lambda: row_gram(rows)))


def _on_one_and_two_blas_threads(work):
    results = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            results.append(work())
    return results


def _symmetric(size: int, seed: int) -> torch.Tensor:
    rows = torch.randn(size, 3 * size, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))
    return rows @ rows.T / (3 * size)


def test_top_eigenpairs_by_count_and_by_value_are_those_of_a_full_eigh():
    """The 7 largest, and those above a value between the 7th and 8th largest: the same
    eigenvalues and (up to sign) eigenvectors as torch's eigh, ascending."""
    matrix = _symmetric(60, 0)
    all_values, all_vectors = torch.linalg.eigh(matrix)
    between = float(all_values[-8] + all_values[-7]) / 2
    for values, vectors in (top_eigenpairs(matrix, count=7),
                            top_eigenpairs(matrix, above=between)):
        assert values.dtype == vectors.dtype == torch.float64 and vectors.shape == (60, 7)
        torch.testing.assert_close(values, all_values[-7:], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close((vectors.T @ all_vectors[:, -7:]).abs(),
                                   torch.eye(7, dtype=torch.float64), rtol=0, atol=1e-9)


def test_top_eigenpairs_reads_the_lower_triangle_and_may_return_none():
    matrix = _symmetric(20, 1)
    lower_only = torch.tril(matrix)
    torch.testing.assert_close(top_eigenpairs(lower_only, count=3)[0],
                               torch.linalg.eigvalsh(matrix)[-3:], rtol=1e-12, atol=1e-12)
    assert top_eigenpairs(matrix, count=0)[1].shape == (20, 0)
    values, vectors = top_eigenpairs(matrix, above=float(torch.linalg.eigvalsh(matrix)[-1]))
    assert values.shape == (0,) and vectors.shape == (20, 0)
    # half-open above: an eigenvalue equal to the bound is left out, like eigh's values > above
    assert top_eigenpairs(torch.eye(3, dtype=torch.float64), above=1.0)[0].shape == (0,)


@pytest.mark.parametrize("arguments", [{}, {"count": 2, "above": 0.0}, {"count": 21}])
def test_top_eigenpairs_wants_a_count_in_range_or_a_value(arguments):
    with pytest.raises(ValueError, match="give count"):
        top_eigenpairs(_symmetric(20, 2), **arguments)


def test_top_eigenpairs_does_not_depend_on_the_thread_count():
    """LAPACK's reduction on two threads moves the vectors of a 256 x 256 matrix by about
    1e-14; on one, whatever the threads around the call, they are the same bits."""
    matrix = _symmetric(256, 3)
    one, two = _on_one_and_two_blas_threads(lambda: top_eigenpairs(matrix, count=30))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
