import sys

import pytest
import torch

from taskgroup.data.datasets.planted import PlantedSpec, generate_planted
from taskgroup.data.examples import build_task_data


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


def small_spec(**overrides) -> PlantedSpec:
    values = dict(
        n_groups=3, tasks_per_group=3, n_train=60, n_val=40, n_test=50, n_features=6,
        label_noise=0.0, within_group_spread=0.2, covariance_decay=1.0, train_imbalance=1.0,
        seed=0,
    )
    values.update(overrides)
    return PlantedSpec(**values)


@pytest.fixture
def small_tables():
    return generate_planted(small_spec())


@pytest.fixture
def small_data(small_tables):
    examples, tasks = small_tables
    return build_task_data(examples, tasks)


def pytest_collection_modifyitems(config, items):
    """Unit tests first, then the workflow tests, the SLURM test last.

    The session starts its long workflow runs in the background (below): while the unit tests
    run on one core, the runs use the other. Once SLURM's commands are installed, every
    Snakemake start asks the SLURM plugin, which waits up to 10 s for `scontrol show config`
    when no controller answers: the cluster this session starts is stopped only when the
    session ends, after the SLURM test."""
    items.sort(key=lambda item: (item.get_closest_marker("slurm") is not None,
                                 item.get_closest_marker("workflow") is not None))


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    """A repository copy with the smoke workflow run to completion in it, shared by the
    session's tests (read-only: copy it to change anything)."""
    import workflow_helpers

    return workflow_helpers.shared_smoke_repository(tmp_path_factory)


@pytest.fixture(scope="session", autouse=True)
def _workflow_runs_in_background(request, tmp_path_factory):
    """Start the selected tests' long workflow runs when the session starts (each test that
    needs one waits for its result), and stop a SLURM cluster the session started at its end."""
    import workflow_helpers

    # A test module with long runs of its own names them in BACKGROUND_RUNS: the fixture
    # that returns a run's result -> the function that starts it (once). The SLURM run first
    # (it mostly waits for the queue), then the shared run most tests need: runs beyond the
    # executor's few workers start when one ends.
    items = request.session.items

    def starts(selected):
        return [start for item in selected
                for fixture, start in getattr(item.module, "BACKGROUND_RUNS", {}).items()
                if fixture in item.fixturenames]

    slurm = starts(item for item in items if item.get_closest_marker("slurm"))
    shared = ([workflow_helpers.start_shared_smoke_run]
              if any("shared_run" in item.fixturenames for item in items) else [])
    others = starts(item for item in items if not item.get_closest_marker("slurm"))
    for start in dict.fromkeys(slurm + shared + others):
        start(tmp_path_factory)
    yield
    workflow_helpers.wait_for_background_runs()
    if "test_slurm" in sys.modules:
        sys.modules["test_slurm"].stop_started_cluster()
