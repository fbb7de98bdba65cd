"""The real value of a subset: fine-tune the meta-initialization on it, measure each member."""

from __future__ import annotations

import copy
import logging
import time

import pandas as pd

from taskgroup.data.examples import TaskData
from taskgroup.models.network import MultiHeadNet
from taskgroup.models.training import TrainSettings, evaluate, fit
from taskgroup.seeding import derived_seed

log = logging.getLogger(__name__)


def finetune_values(
    meta_model: MultiHeadNet,
    data: TaskData,
    subsets: pd.DataFrame,
    settings: TrainSettings,
    seed: int,
    metric: str = "auto",
) -> pd.DataFrame:
    """f_i(S) for every subset S in ``subsets`` and every member i, by real fine-tuning.

    Each subset starts from a copy of ``meta_model`` and is trained on its members' training
    examples with a seed derived from (seed, subset_id), so a subset's value does not depend
    on which chunk it was computed in. Returns the subset_values table (see
    :mod:`taskgroup.data.tables`) with split "val", estimator "finetune"; its metric column
    holds ``metric`` (evaluation.metric, see :func:`taskgroup.models.training.evaluate`).
    """
    rows = []
    grouped = list(subsets.groupby("subset_id", sort=True)["task"])
    started = time.perf_counter()
    for done, (subset_id, members) in enumerate(grouped, start=1):
        indices = data.task_indices(members.tolist())
        model = copy.deepcopy(meta_model)
        fit(model, data, indices, settings, seed=derived_seed(seed, int(subset_id)))
        values = evaluate(model, data, indices, splits=("val",), metric=metric)
        values.insert(0, "subset_id", int(subset_id))
        rows.append(values)
        if done % 25 == 0 or done == len(grouped):
            elapsed = time.perf_counter() - started
            log.info(
                "fine-tuned %d/%d subsets in %.1f s (%.2f subsets/s)",
                done, len(grouped), elapsed, done / max(elapsed, 1e-9),
            )
    table = pd.concat(rows, ignore_index=True).drop(columns="n_examples")
    table["estimator"] = "finetune"
    return table.astype({"subset_id": "int64"})
