"""The memory formulas of taskgroup.resources, against hand-computed sizes and the peaks
measured on the k = 100 planted config (README "Scaling")."""

import math

import pytest

from taskgroup import resources
from taskgroup.group.clustering import CLARABEL_MAX_TASKS


def test_the_sdp_threshold_mirrors_the_clustering_module():
    assert resources.SDP_INTERIOR_POINT_MAX_TASKS == CLARABEL_MAX_TASKS


def test_sizes_by_hand():
    assert resources.to_mb(1) == 1 and resources.to_mb(2_000_000) == 2
    # 10 rows of 4 features, label, task, split: 10 * 7 float64
    assert resources.examples_bytes(10, 4) == 560
    assert resources.planted_examples(30, 100, 100, 200) == 12_000
    assert resources.file_examples_bytes(1_000) == 1_000 * resources.FILE_EXPANSION
    shapes = resources.layer_shapes(20, [2], 100)
    assert shapes == [(2, 21), (100, 3)]
    assert resources.n_parameters(shapes) == 42 + 300
    # the projected width the k = 100 planted config wrote: 2 * 21 + 64 * 3
    assert resources.projected_dim(shapes, "kronecker", 64) == 234
    assert resources.projected_dim(shapes, "dense", 256) == 256
    assert resources.projected_dim(resources.layer_shapes(8, [16, 8], 9), "kronecker", 4) == (
        4 * 4 + 4 * 4 + 4 * 4
    )


def test_formulas_add_the_process_to_the_arrays():
    data = 7_360_000  # the k = 100 planted examples: 40,000 rows of 20 features
    assert resources.data_table_mb(data) == resources.TABLE_PROCESS_MB + math.ceil(3 * 7.36)
    params = 342
    assert resources.training_mb(data, params) == resources.TORCH_PROCESS_MB + math.ceil(
        (3 * (data + 4 * 8 * params)) / 1e6
    )
    # projected table 20,000 by 238 float64, batch 4096 by 234 float32
    expected = resources.TORCH_PROCESS_MB + math.ceil(
        (3 * (data + 8 * 20_000 * 238) + 4 * 4096 * 234) / 1e6
    )
    assert resources.projection_mb(data, 20_000, 234, 4096) == expected
    hessians = 8 * 234 * 234 * (100 + 3 * 100)
    expected = resources.TORCH_PROCESS_MB + math.ceil(
        (3 * 8 * 20_000 * 238 + hessians + 3 * 8 * 10_000 * 100) / 1e6
    )
    assert resources.subset_estimate_mb(100, 20_000, 10_000, 234, 100) == expected
    assert resources.subset_table_mb(600, 30) == resources.TABLE_PROCESS_MB + math.ceil(
        3 * 2 * 2 * 8 * 600 * 30 / 1e6
    )


@pytest.mark.parametrize(
    ("measured_mb", "formula"),
    [
        # peak RSS measured on the k = 100 planted config (10 groups of 10 tasks, defaults)
        (417, lambda: resources.training_mb(7_360_000, 342)),  # train_meta_init
        (410, lambda: resources.projection_mb(7_360_000, 20_000, 234, 4096)),
        (605, lambda: resources.subset_estimate_mb(100, 20_000, 10_000, 234, 100)),
        (304, lambda: resources.sdp_mb(100)),  # cluster_tasks, SCS
        (580, lambda: resources.validation_mb(7_360_000, 342, 100)),
        # fit_surrogates in benchmarks/scale.py: k = 30 (600 + 465 subsets), k = 100
        # (1000 + 1100)
        (274, lambda: resources.surrogates_mb(1065, 30)),
        (491, lambda: resources.surrogates_mb(2100, 100)),
    ],
)
def test_formulas_cover_the_measured_peaks_without_gross_excess(measured_mb, formula):
    assert measured_mb <= formula() <= 1.6 * measured_mb


def test_sdp_memory_follows_the_solver():
    # Clarabel's k^4 up to the threshold, SCS's k^2 above: the switch lowers the need
    below = resources.sdp_mb(resources.SDP_INTERIOR_POINT_MAX_TASKS)
    above = resources.sdp_mb(resources.SDP_INTERIOR_POINT_MAX_TASKS + 1)
    assert below == resources.TABLE_PROCESS_MB + math.ceil(2 * 1.6e-5 * 60**4)
    assert above < below
    # the measured SCS peak at k = 500 (0.87 GB with its process) is covered
    assert resources.sdp_mb(500) >= 870
