import pytest
import torch

from taskgroup.estimate.symmetric import row_gram


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
    """The same bits on one thread as on two: a job's results must not depend on its
    threads (syrk's own threads would split its sums)."""
    rows = torch.randn(3000, 257, generator=torch.Generator().manual_seed(1)).T
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = row_gram(rows)
        torch.set_num_threads(2)
        two = row_gram(rows)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
