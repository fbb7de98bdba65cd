"""Memory each job needs, from the sizes known when the workflow is parsed.

Every rule whose memory grows with the number of tasks k, the data or the projection
declares ``resources: mem_mb=...`` from these formulas (through small functions in
``rules/common.smk``), so that ``snakemake --resources mem_mb=N`` and the SLURM executor
(``sbatch --mem``) do not start more jobs than the memory holds. Imported at parse time:
standard library only.

Units: every ``*_bytes`` function returns bytes (int), every ``*_mb`` function megabytes
(MB, 10**6 bytes, int, rounded up), which is what Snakemake's ``mem_mb`` means. Sizes are
peak resident memory (RSS) of the job's Python process. Each formula is a fixed process
cost (interpreter and imports, measured) plus COPIES times the float64 arrays the stage
holds, a safety margin over what was measured (README "Scaling" lists the measurements).
"""

from __future__ import annotations

import math

# Resident memory of a job's process before its data: Python with torch, numpy and pandas
# imported (measured 410 to 420 MB on the k = 100 planted config, whose data are 8 MB) ...
TORCH_PROCESS_MB = 450
# ... with numpy, pandas, scikit-learn and cvxpy but no torch (measured 170 to 305 MB) ...
TABLE_PROCESS_MB = 320
# ... and with torch and cvxpy both (validate_estimator: 580 MB measured at k = 100).
TORCH_SOLVER_PROCESS_MB = 600
# Copies of a stage's main arrays alive at its peak (the Parquet read, the pandas frame,
# the tensors or matrices made from it); the measured peaks need 2 to 3.
COPIES = 3
# A user's Parquet or CSV file holds its numbers compressed; in memory, as float64, they
# take up to this many times the file's size.
FILE_EXPANSION = 10
# Bytes of a float64 and of a float32 (the networks' parameters).
FLOAT = 8
FLOAT32 = 4
# The batches of the projection and of the subset fits (taskgroup.estimate.settings sizes
# them from a job's mem_mb with these): at most BATCH_MB, at most PROJECTION_BATCH_EXAMPLES
# examples projected at a time (no faster beyond); bytes per example and entry of a
# projection batch (float32, three copies: the per-example gradients, their projection, a
# margin; the projected rows are written in place, not concatenated) and per subset and
# d x d entry of a batch of subset fits (float64, three copies: the Hessian sums factored
# in place, the solve's work, a margin).
BATCH_MB = 512
# The linearized validation (taskgroup.estimate.linearized.linearized_values) computes at
# most this many outputs (one task's rows by its subsets) at a time: 32 MB of float64 per
# copy.
OUTPUT_ENTRIES = 2**22
PROJECTION_BATCH_EXAMPLES = 4096
PROJECTION_BYTES = 3 * 4
SUBSET_FIT_BYTES = 3 * FLOAT
# Up to this many tasks the SDP goes to the interior-point solver (Clarabel), whose memory
# grows as k^4, above it to SCS (k^2). Mirrors taskgroup.group.clustering
# .CLARABEL_MAX_TASKS, which is not imported here (that module imports cvxpy); a unit test
# keeps the two equal.
SDP_INTERIOR_POINT_MAX_TASKS = 60


def to_mb(n_bytes: float) -> int:
    """Bytes to MB (10**6 bytes), rounded up."""
    return math.ceil(n_bytes / 10**6)


def examples_bytes(n_examples: int, n_features: int) -> int:
    """The examples table in memory: n_examples rows of n_features float64 features plus
    the label and two bookkeeping columns (task, split)."""
    return FLOAT * n_examples * (n_features + 3)


def planted_examples(n_tasks: int, n_train: int, n_val: int, n_test: int) -> int:
    """Rows of the planted generator's examples table: every task has n_train + n_val +
    n_test examples."""
    return n_tasks * (n_train + n_val + n_test)


def file_examples_bytes(file_bytes: int) -> int:
    """An upper estimate of the in-memory size of a user's data files of ``file_bytes``
    bytes in all (FILE_EXPANSION times the files)."""
    return FILE_EXPANSION * file_bytes


def layer_shapes(n_features: int, hidden_sizes: list[int], n_tasks: int) -> list[tuple[int, int]]:
    """(out, in + 1) of each linear layer of the multi-head network: the trunk's layers,
    then the k heads of one output each as one (k, last hidden + 1) layer."""
    sizes = [n_features, *hidden_sizes]
    shapes = [(out, inputs + 1) for inputs, out in zip(sizes, sizes[1:])]
    return shapes + [(n_tasks, sizes[-1] + 1)]


def n_parameters(shapes: list[tuple[int, int]]) -> int:
    """Parameters of a network of linear layers of ``shapes`` (weights and biases)."""
    return sum(out * inputs for out, inputs in shapes)


def allocate_columns(shapes: list[tuple[int, int]], dim: int) -> list[int]:
    """Projected columns of every linear layer of ``shapes`` ((out, in + 1), heads last) for
    a projection to ``dim``: every layer's size when they sum to at most ``dim`` (exact);
    else shares of ``dim`` in proportion to the layers' sizes (rounded down, at least 1),
    the heads' share rounded down to a multiple of k, at least k (one column per task, so
    the total can exceed ``dim`` by up to k - 1 when k is close to ``dim``). The projection
    (taskgroup.estimate.projection) builds its blocks from these counts; they live here,
    without torch, because the job memory formulas need them at parse time."""
    sizes = [out * inputs for out, inputs in shapes]
    total = sum(sizes)
    if total <= dim:
        return sizes
    columns = [max(1, dim * size // total) for size in sizes]
    n_tasks, head_inputs = shapes[-1]
    columns[-1] = n_tasks * min(head_inputs, max(1, columns[-1] // n_tasks))
    return columns


def estimate_columns(shapes: list[tuple[int, int]], dim: int) -> tuple[int, int]:
    """(shared, private): the projected columns of the trunk's layers, which every task's
    examples use, and the columns of one task's head, which its examples alone use (the
    column layout of the subset fits, taskgroup.estimate.linearized.column_layout)."""
    columns = allocate_columns(shapes, dim)
    return sum(columns[:-1]), columns[-1] // shapes[-1][0]


def projected_dim(shapes: list[tuple[int, int]], dim: int) -> int:
    """An upper bound on the columns of the projected gradients: the columns
    :func:`allocate_columns` gives the layers (every parameter when there are at most
    ``dim`` = projection.dim of them; a structure may use fewer, e.g. Kronecker factors
    whose product falls short of a layer's share)."""
    return sum(allocate_columns(shapes, dim))


def projection_batch_mb(widest: int, dim: int) -> int:
    """The batches of project_gradients: PROJECTION_BATCH_EXAMPLES examples' gradients of
    the ``widest`` layer (entries) and their ``dim`` projected columns, at most BATCH_MB."""
    return min(BATCH_MB, to_mb(PROJECTION_BYTES * PROJECTION_BATCH_EXAMPLES * (widest + dim)))


def subset_fit_batch_mb(dim: int, chunk: int) -> int:
    """The batches of subset fits: a chunk's (chunk, dim, dim) systems (``dim``: the columns
    of the largest subset's system), at most BATCH_MB."""
    return min(BATCH_MB, to_mb(SUBSET_FIT_BYTES * chunk * dim * dim))


def data_table_mb(data_bytes: int) -> int:
    """A table stage over the examples (prepare_dataset): the table process and COPIES of
    the examples."""
    return TABLE_PROCESS_MB + to_mb(COPIES * data_bytes)


def training_mb(data_bytes: int, n_params: int) -> int:
    """A job that trains or fine-tunes the multi-head network on the examples (meta-init,
    lookahead, fine-tuned subsets, group models, gradient cosine): the torch process, COPIES
    of the data and of the parameters (with their gradients and optimizer state)."""
    return TORCH_PROCESS_MB + to_mb(COPIES * (data_bytes + 4 * FLOAT * n_params))


# Bytes the stacked models of one stack of train_group_models may hold; a batch whose models
# need more is trained in several stacks, one after another (same results).
STACK_BUDGET_BYTES = 1_000_000_000
# float32 copies of each stacked model's parameters alive in a step: the parameters, their
# gradients, Adam's two moments, the best epoch's copy and the update's temporaries.
STACKED_PARAMETER_COPIES = 8


def stacked_model_bytes(n_params: int, n_val: int, widest: int) -> int:
    """Bytes one model adds to a stack: its parameter copies and its validation pass (the
    activations of the widest layer on every validation example, three alive at a time)."""
    return FLOAT32 * (STACKED_PARAMETER_COPIES * n_params + 3 * n_val * widest)


def models_per_stack(n_params: int, n_val: int, widest: int) -> int:
    """How many models one stack holds within :data:`STACK_BUDGET_BYTES` (at least 1)."""
    return max(1, STACK_BUDGET_BYTES // stacked_model_bytes(n_params, n_val, widest))


def stacked_training_mb(data_bytes: int, n_params: int, n_models: int, n_val: int,
                        widest: int) -> int:
    """train_group_models: a training job (:func:`training_mb`) plus its largest stack of
    ``n_models`` models (:func:`models_per_stack`)."""
    stack = min(n_models, models_per_stack(n_params, n_val, widest))
    return training_mb(data_bytes, n_params) + to_mb(
        stack * stacked_model_bytes(n_params, n_val, widest)
    )


def finetuning_mb(data_bytes: int, n_params: int, n_models: int, n_val: int,
                  widest: int) -> int:
    """A job that fine-tunes ``n_models`` subsets together (finetune_subsets, the
    validation rules): a training job (:func:`training_mb`), the ``n_models`` fine-tuned
    networks (float32 parameters) and the parameter copies of its largest stack
    (:func:`models_per_stack`; fine-tuning runs no validation pass, so a stacked model
    holds its parameter copies only)."""
    stack = min(n_models, models_per_stack(n_params, n_val, widest))
    return training_mb(data_bytes, n_params) + to_mb(
        FLOAT32 * n_params * (n_models + stack * STACKED_PARAMETER_COPIES)
    )


def projection_mb(data_bytes: int, n_projected: int, dim: int, widest: int) -> int:
    """project_gradients: the torch process, COPIES of the examples and of the projected
    table (n_projected train and validation examples by dim + 4 float64 columns), and a
    batch of per-example gradients (:func:`projection_batch_mb`; ``widest``: the entries of
    the largest layer)."""
    table = FLOAT * n_projected * (dim + 4)
    return (
        TORCH_PROCESS_MB + to_mb(COPIES * (data_bytes + table))
        + projection_batch_mb(widest, dim)
    )


def training_gram_mb(n_train: int, n_tasks: int, shared: int, private: int) -> int:
    """The Gram that the subset fits solved on their training examples keep
    (taskgroup.estimate.linearized.TrainingGram): all n_train^2 float64 inner products when
    they take at most BATCH_MB (its largest budget), else none (each request computes its
    blocks). Reserved when the mean task has fewer training examples than a one-task
    subset's columns (``shared`` + ``private``), as the wide trunks with few examples per
    task do; else 0: then at most the subsets of unusually small tasks are solved on their
    examples (a smaller budget keeps no Gram; that changes no value)."""
    if n_tasks == 0 or n_train >= n_tasks * (shared + private):
        return 0
    gram = FLOAT * n_train**2
    return to_mb(gram) if gram <= BATCH_MB * 10**6 else 0


def subset_estimate_mb(n_tasks: int, n_projected: int, n_val: int, dim: int, shared: int,
                       private: int, largest: int, chunk: int) -> int:
    """estimate_subsets (and forward selection with the gradient estimator): the torch
    process; COPIES of the projected table (``dim`` columns); the per-task statistics,
    computed once: k + 1 blocks of at most (shared + private)^2 float64 (the trunk's
    ``shared`` columns and one head's ``private`` ones, :func:`estimate_columns`); a batch
    of subset fits (:func:`subset_fit_batch_mb`), whose systems have shared + ``largest``
    x private columns for subsets of at most ``largest`` tasks; the validation: COPIES of
    at most OUTPUT_ENTRIES outputs (a task's n_val rows at most by the chunk), and the
    chunk's shifts (chunk, dim) and its loss and metric tables (chunk, k); the Gram blocks
    of :func:`training_gram_mb` (n_projected - n_val training rows)."""
    table = COPIES * FLOAT * n_projected * (dim + 4)
    statistics = FLOAT * (n_tasks + 1) * (shared + private) ** 2
    outputs = COPIES * FLOAT * min(OUTPUT_ENTRIES, n_val * chunk) + FLOAT * chunk * (
        dim + 2 * n_tasks)
    return (TORCH_PROCESS_MB + to_mb(table + statistics + outputs)
            + subset_fit_batch_mb(shared + largest * private, chunk)
            + training_gram_mb(n_projected - n_val, n_tasks, shared, private))


def sdp_solver_mb(n_tasks: int) -> int:
    """The SDP solver's matrices, fitted to the peaks of benchmarks/sdp_scale.py (README
    "The SDP at scale") less its process: Clarabel (k <= SDP_INTERIOR_POINT_MAX_TASKS)
    1.6e-5 k^4 MB (0.2 GB at k = 60, 1.4 GB at k = 100), SCS 2.6e-3 k^2 MB (0.64 GB at
    k = 500); doubled as a margin."""
    if n_tasks <= SDP_INTERIOR_POINT_MAX_TASKS:
        solver = 1.6e-5 * n_tasks**4
    else:
        solver = 2.6e-3 * n_tasks**2
    return math.ceil(2 * solver)


def sdp_mb(n_tasks: int) -> int:
    """cluster_tasks, whose SDP dominates: the table process plus the solver."""
    return TABLE_PROCESS_MB + sdp_solver_mb(n_tasks)


def validation_mb(data_bytes: int, n_params: int, n_tasks: int, n_models: int, n_val: int,
                  widest: int) -> int:
    """validate_estimator, which fine-tunes ``n_models`` held-out subsets together (torch)
    and clusters (cvxpy) in one process: the process with both imported, the fine-tuning's
    data, parameters and stack (:func:`finetuning_mb`), and the SDP's solver."""
    training = finetuning_mb(data_bytes, n_params, n_models, n_val, widest) - TORCH_PROCESS_MB
    return TORCH_SOLVER_PROCESS_MB + training + sdp_solver_mb(n_tasks)


def subset_table_mb(n_subsets: int, n_tasks: int) -> int:
    """A table stage over the per-subset values of a design (affinities, surrogates): the
    table process and COPIES of the dense (n_subsets, k) membership and loss matrices, for
    each of the train and validation splits."""
    return TABLE_PROCESS_MB + to_mb(COPIES * 2 * 2 * FLOAT * n_subsets * n_tasks)


# fit_surrogates' memory above its tables grows with k: 274 MB peak at k = 30, 491 at
# k = 100 (benchmarks/scale.py); a fit to those two, not an analysed cause (it fits k
# ridge regressions with their folds and draws a (k, k) heatmap).
SURROGATE_MB_PER_TASK = 2.5


def surrogates_mb(n_subsets: int, n_tasks: int) -> int:
    """fit_surrogates: :func:`subset_table_mb` of its designs plus SURROGATE_MB_PER_TASK
    per task."""
    return subset_table_mb(n_subsets, n_tasks) + math.ceil(SURROGATE_MB_PER_TASK * n_tasks)

