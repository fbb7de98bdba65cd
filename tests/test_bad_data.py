"""A bad user table stops the workflow in prepare_dataset with a clear message and no output."""

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import make_workdir, smoke_config, snakemake

pytestmark = pytest.mark.workflow


def test_table_with_nan_features_fails_in_preparation_and_leaves_nothing(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "school": np.repeat([f"s{i}" for i in range(7)], 30),
        "x1": rng.normal(size=210),
        "x2": rng.normal(size=210),
        "y": np.tile([0, 1], 105),
    })
    frame.loc[[4, 100], "x2"] = np.nan
    config = smoke_config()
    config["dataset"] = {
        "name": "bad", "kind": "table",
        "table": {"path": "bad.csv", "task_column": "school", "label_column": "y"},
    }
    config["evaluation"]["baselines"] = ["naive_mtl", "stl"]
    workdir = make_workdir(tmp_path, config)
    frame.to_csv(workdir / "bad.csv", index=False)
    result = snakemake(workdir, "results/bad/data/tasks.parquet", check=False)
    assert result.returncode != 0
    log = (workdir / "results" / "bad" / "logs" / "prepare_dataset.log").read_text()
    message = "bad.csv: NaN or infinite values in column 'x2': 2 row(s) (data rows 4, 100)"
    assert message in log
    output = result.stdout + result.stderr
    assert "Error in rule prepare_dataset" in output and message in output  # log shown
    data = workdir / "results" / "bad" / "data"
    assert not data.exists() or not any(data.iterdir())
