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
    """Run the SLURM test last. Once SLURM's commands are installed, every Snakemake start
    asks the SLURM plugin, which waits up to 10 s for `scontrol show config` when no
    controller answers (after the test stops its cluster): workflow tests collected after it
    would each pay that wait."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)
