"""Synthetic binary tasks in planted groups (ICLR 2020, Wu, Zhang and Re, section 2.3).

Tasks of one group share an input covariance and nearly the same linear teacher; different
groups have independent random covariances and teachers. A shared trunk with little
capacity cannot serve every group at once, so pooling tasks across groups hurts (negative
transfer) while pooling within a group helps (more data for the same model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from taskgroup.data.datasets.task_selection import kept_tasks
from taskgroup.data.tables import FEATURE_PREFIX, tasks_table


@dataclass(frozen=True)
class PlantedSpec:
    """Knobs of the planted generator.

    n_groups: number of planted groups.
    tasks_per_group: tasks in each group, one int for equal groups or a sequence of
        n_groups ints (unequal groups); k is their total. Groups hold consecutive tasks.
    n_train, n_val, n_test: examples per task and split (n_train is the largest task's).
    train_imbalance: ratio of the largest to the smallest task's n_train (>= 1); task sizes
        are spread log-uniformly between n_train / train_imbalance and n_train.
    n_features: input dimension.
    within_group_spread: norm of each task's deviation from its group's unit teacher vector.
    covariance_decay: eigenvalues of a group's covariance decay as i ** -covariance_decay.
    label_noise: probability that a label is flipped, one float for every task or a sequence
        of n_groups floats (e.g. one heavily noisy group).
    seed: seed of every random draw.
    exclude_tasks: task names (task_00, ...) left out of the tables; the generator draws
        every task all the same, so the others are the tasks of the full dataset.
    """

    n_groups: int
    tasks_per_group: int | tuple[int, ...]
    n_train: int
    n_val: int
    n_test: int
    n_features: int
    label_noise: float | tuple[float, ...]
    within_group_spread: float
    covariance_decay: float
    train_imbalance: float
    seed: int
    # Empty (none left out) as the schema's default, like the other dataset specs' optional
    # keys: specs built from a section read without the schema stay valid.
    exclude_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_tasks", tuple(self.exclude_tasks))
        for key in ("tasks_per_group", "label_noise"):
            value = getattr(self, key)
            if isinstance(value, (list, tuple)):
                if len(value) != self.n_groups:
                    raise ValueError(
                        f"dataset.planted.{key} lists {len(value)} values; expected one per "
                        f"group (n_groups = {self.n_groups}) or a single value"
                    )
                object.__setattr__(self, key, tuple(value))

    @property
    def group_sizes(self) -> tuple[int, ...]:
        """Tasks per group, (n_groups,)."""
        if isinstance(self.tasks_per_group, tuple):
            return self.tasks_per_group
        return (self.tasks_per_group,) * self.n_groups

    @property
    def group_label_noise(self) -> tuple[float, ...]:
        """Label-flip probability per group, (n_groups,)."""
        if isinstance(self.label_noise, tuple):
            return self.label_noise
        return (float(self.label_noise),) * self.n_groups

    @property
    def n_tasks(self) -> int:
        """Tasks the generator draws (exclude_tasks included)."""
        return sum(self.group_sizes)

    @property
    def task_names(self) -> list[str]:
        """Names of the drawn tasks, task_0.. with as many digits as the last one needs."""
        width = len(str(self.n_tasks - 1))
        return [f"task_{index:0{width}d}" for index in range(self.n_tasks)]


def planted_task_names(spec: PlantedSpec) -> list[str]:
    """The tasks of the planted dataset: the drawn ones but ``exclude_tasks``; DataError
    for a name the generator does not draw."""
    return kept_tasks(
        spec.task_names, spec.exclude_tasks, "dataset.planted", "",
        "the planted generator (task_0.. up to n_groups x tasks_per_group)",
    )


def planted_spec(section: dict) -> PlantedSpec:
    """The generator spec from the ``dataset.planted`` config section."""
    return PlantedSpec(**section)


def _random_rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def _train_sizes(spec: PlantedSpec, rng: np.random.Generator) -> np.ndarray:
    if spec.train_imbalance == 1.0:
        return np.full(spec.n_tasks, spec.n_train)
    low = np.log(spec.n_train / spec.train_imbalance)
    sizes = np.exp(rng.uniform(low, np.log(spec.n_train), size=spec.n_tasks))
    return np.maximum(np.round(sizes).astype(int), 2)


def generate_planted(spec: PlantedSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw the examples and tasks tables (schemas in :mod:`taskgroup.data.tables`).

    Returns
    -------
    examples : DataFrame, one row per example, columns task, split, feature_000.., label.
    tasks : DataFrame, one row per task, with its planted group.
    The tasks of ``exclude_tasks`` are drawn and then left out of both tables.
    """
    kept = set(planted_task_names(spec))
    rng = np.random.default_rng(spec.seed)
    eigenvalues = np.arange(1, spec.n_features + 1, dtype=float) ** -spec.covariance_decay
    eigenvalues *= spec.n_features / eigenvalues.sum()  # average variance 1 per feature
    group_bases = [_random_rotation(rng, spec.n_features) for _ in range(spec.n_groups)]
    group_teachers = rng.standard_normal((spec.n_groups, spec.n_features))
    group_teachers /= np.linalg.norm(group_teachers, axis=1, keepdims=True)
    train_sizes = _train_sizes(spec, rng)

    group_of_task = np.repeat(np.arange(spec.n_groups), spec.group_sizes)
    frames, tasks, counts, groups = [], [], [], []
    for task_index in range(spec.n_tasks):
        group = int(group_of_task[task_index])
        task = spec.task_names[task_index]
        deviation = rng.standard_normal(spec.n_features)
        teacher = group_teachers[group] + spec.within_group_spread * deviation / np.linalg.norm(
            deviation
        )
        sizes = {"train": int(train_sizes[task_index]), "val": spec.n_val, "test": spec.n_test}
        n_total = sum(sizes.values())
        latent = rng.standard_normal((n_total, spec.n_features)) * np.sqrt(eigenvalues)
        features = latent @ group_bases[group].T
        clean = (features @ teacher > 0).astype(np.float32)
        flips = rng.random(n_total) < spec.group_label_noise[group]
        labels = np.where(flips, 1.0 - clean, clean).astype(np.float32)
        frame = pd.DataFrame(
            features.astype(np.float32),
            columns=[f"{FEATURE_PREFIX}{i:03d}" for i in range(spec.n_features)],
        )
        frame.insert(0, "split", np.repeat(list(sizes), list(sizes.values())))
        frame.insert(0, "task", task)
        frame["label"] = labels
        if task not in kept:  # drawn all the same: the later tasks' draws stay the same
            continue
        frames.append(frame)
        tasks.append(task)
        counts.append([sizes["train"], sizes["val"], sizes["test"]])
        groups.append(group)
    examples = pd.concat(frames, ignore_index=True)
    return examples, tasks_table(tasks, "binary", counts, groups)
