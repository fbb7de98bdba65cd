"""Checks of the workflow config that a JSON schema cannot express (cross-key constraints).

The schema (``config/config.schema.yaml``) checks keys, types and ranges; these functions
check what depends on several keys, e.g. that the subset size does not exceed the number
of tasks. Both run when Snakemake parses the workflow, before any job starts.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import sys
from pathlib import Path

import yaml

from taskgroup.data.datasets import DatasetKind, dataset_kind
from taskgroup.data.designs import (
    check_subset_design,
    expected_pair_count,
    n_chunks,
    sampled_pair_count,
)
from taskgroup.data.task_types import check_metric
from taskgroup.estimate.settings import GradientEstimateSettings
from taskgroup.group.groupings import BASELINES, check_n_clusters

# The random design must put a pair of tasks in at least this many subsets on average
# (m a (a - 1) / (k (k - 1))): below it a large share of the pairs shares no subset (about
# exp(-coverage) of them; 37% at 1) and has no higher-order affinity and no surrogate
# coefficient. Every shipped config is far above it (the smoke config 2.5, the examples 14
# to 20); the default design of 600 subsets of 5 falls below it from k = 111 tasks on.
MIN_PAIR_COVERAGE = 1.0

# The singletons-and-pairs design grows as k^2 / 2 (k = 200 tasks: 20,100 subsets, each
# fine-tuned or estimated, in hundreds of jobs); above this many subsets it is refused at
# parse time rather than planning a run of hours to days. The shipped configs need at most
# 9,730 (School, k = 139).
MAX_PAIR_DESIGN_SUBSETS = 20_000


# Where a dataset kind whose config can lack a known grouping takes it (the planted
# baseline's groups).
GROUPING_KEYS = {
    "table": "set dataset.table.groups_path (a table of task and group) and group_column",
    "graph_communities": (
        "set dataset.graph_communities.community_groups (community column -> group)"
    ),
}


class ConfigError(ValueError):
    """A config value that is valid on its own but inconsistent with the others."""


def check_yaml_file(path: str | os.PathLike) -> None:
    """Raise ConfigError if the config file ``path`` is not YAML with keys at the top level,
    naming the file, the line and column (counting from 1), the parser's complaint and the
    line's text. Snakemake's own message for such a file names neither the file nor the
    line. A missing file passes (Snakemake reports it)."""
    try:
        text = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a readable config file ({error})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        where = ""
        if mark is not None:
            lines = text.splitlines()
            shown = lines[mark.line] if mark.line < len(lines) else ""
            where = f" at line {mark.line + 1}, column {mark.column + 1}: {shown.strip()!r}"
        raise ConfigError(
            f"{path}: not valid YAML{where} ({problem}"
            + (f", {context}" if context else "")
            + "). Check the indentation (spaces only, no tabs), the colons after keys and "
            "the closing brackets of [lists] and {mappings}"
        ) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: the config must be a mapping of keys (dataset:, model:, ...) at the top "
            f"level; the file holds a {type(loaded).__name__}"
        )


# YAML 1.1 (PyYAML, which Snakemake reads configs with) takes 1e-3 for text: a number in
# exponent notation needs a decimal point (1.0e-3).
EXPONENT_WITHOUT_POINT = re.compile(r"[+-]?\d+[eE][+-]?\d+")


def _resolved(node: dict, schema: dict) -> dict:
    """``node`` with its ``$ref`` (to #/$defs/.., followed through chains) merged in: the
    node's own keys win, and the properties of both are kept."""
    if "$ref" not in node:
        return node
    target = schema
    for part in node["$ref"].lstrip("#/").split("/"):
        target = target.get(part, {})
    target = _resolved(target, schema)
    own = {k: v for k, v in node.items() if k != "$ref"}
    merged = {**target, **own}
    if "properties" in target and "properties" in own:
        merged["properties"] = {**target["properties"], **own["properties"]}
    return merged


def _schema_types(node: dict, schema: dict) -> set[str]:
    """The JSON types a schema ``node`` allows (through $ref to #/$defs/.. and
    oneOf/anyOf), leaving out "string" where only fixed words are allowed; empty when it
    does not say."""
    node = _resolved(node, schema)
    kinds = node.get("type", [])
    types = {kinds} if isinstance(kinds, str) else set(kinds)
    if "const" in node or "enum" in node:
        # fixed words (n_clusters: auto): no text written like a number is one of them
        types.discard("string")
    for key in ("oneOf", "anyOf"):
        for option in node.get(key, []):
            types |= _schema_types(option, schema)
    return types


def _schema_children(node: dict, schema: dict, key) -> list[dict]:
    """The schema nodes that may describe ``node``'s child ``key`` (a property name or a
    list index)."""
    node = _resolved(node, schema)
    children = []
    for option in [node] + node.get("oneOf", []) + node.get("anyOf", []):
        option = _resolved(option, schema)
        if isinstance(key, int):
            if isinstance(option.get("items"), dict):
                children.append(option["items"])
        elif key in option.get("properties", {}):
            children.append(option["properties"][key])
        elif isinstance(option.get("additionalProperties"), dict):
            children.append(option["additionalProperties"])
    return children


def check_number_texts(config, schema: dict, nodes: list[dict] | None = None,
                       name: str = "") -> None:
    """Raise ConfigError naming the first key where the ``schema`` expects a number but the
    ``config`` holds text written like a number in exponent notation without a decimal
    point (``lr: 1e-3``): YAML reads it as the text '1e-3', and the schema's complaint
    ("'1e-3' is not of type 'number'") does not say why. Where text is allowed (task names,
    column names) such a value is left alone."""
    nodes = [schema] if nodes is None else nodes
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        child_name = f"{name}[{key}]" if isinstance(key, int) else (
            f"{name}.{key}" if name else str(key)
        )
        children = [c for node in nodes for c in _schema_children(node, schema, key)]
        if isinstance(value, (dict, list)):
            check_number_texts(value, schema, children, child_name)
            continue
        if not isinstance(value, str) or not EXPONENT_WITHOUT_POINT.fullmatch(value.strip()):
            continue
        types = set().union(*(_schema_types(child, schema) for child in children))
        if types & {"number", "integer"} and "string" not in types:
            mantissa, exponent = re.split("[eE]", value.strip())
            raise ConfigError(
                f"config: {child_name} = {value!r} is text, not a number: YAML reads a "
                "number in exponent notation only with a decimal point; write "
                f"{mantissa}.0e{exponent} (or {float(value):g})"
            )


def configured_dataset(dataset: dict) -> tuple[DatasetKind, object]:
    """The kind named by ``dataset.kind`` (:data:`taskgroup.data.datasets.DATASET_KINDS`)
    and its spec from the section ``dataset.<kind>``."""
    try:
        kind = dataset_kind(dataset["kind"])
    except ValueError as error:
        raise ConfigError(f"config: {error}") from None
    return kind, kind.spec(dataset_section(dataset))


def n_tasks(config: dict) -> int:
    """The number of tasks k that the configured dataset will have. For a user's data only
    the header or the task column is read (and checked: task names, the ``tasks`` list)."""
    kind, spec = configured_dataset(config["dataset"])
    return kind.n_tasks(spec)


def has_planted_groups(dataset: dict) -> bool:
    """Whether the configured dataset knows a grouping of its tasks (the tasks table's
    planted_group): the generators do, a user's data when it names its groups."""
    kind, spec = configured_dataset(dataset)
    return kind.has_planted_groups(spec)


def declared_task_type(dataset: dict) -> str | None:
    """The task type every task has, when the config alone tells it (the generators make
    binary tasks; a table with an explicit task_type); None when only the data can."""
    kind, spec = configured_dataset(dataset)
    return kind.declared_task_type(spec)


def dataset_section(dataset: dict) -> dict:
    """The config section of the configured dataset kind (``dataset.<kind>``)."""
    return dataset[dataset["kind"]]


def dataset_files(dataset: dict) -> list[str]:
    """The data files the configured dataset reads (inputs of the preparation)."""
    kind, spec = configured_dataset(dataset)
    return kind.files(spec)


def check_config(config: dict) -> None:
    """Raise ConfigError, naming the key, if the config's values are inconsistent."""
    k = n_tasks(config)
    if k < 2:
        kind = config["dataset"]["kind"]
        raise ConfigError(
            f"config: the dataset (dataset.kind: {kind}) has k = {k} task: grouping tasks "
            f"needs at least 2 (3 with clustering.n_clusters: auto); check dataset.{kind} "
            "(its task column, tasks and exclude_tasks)"
        )
    task_type = declared_task_type(config["dataset"])
    if task_type is not None:
        try:
            check_metric(config["evaluation"].get("metric", "auto"), [task_type])
        except ValueError as error:
            raise ConfigError(str(error)) from None
    subsets = config["subsets"]
    try:
        check_subset_design(k, subsets["size"], subsets["count"])
    except ValueError as error:
        raise ConfigError(f"config: {error}") from None
    users = random_design_users(config)
    if users:
        check_pair_coverage(k, subsets["size"], subsets["count"], users)
    if needs_pair_design(config):
        check_pair_design_size(
            k, pair_sample(config, k), subsets["chunk_size"], pair_design_users(config)
        )
    try:
        GradientEstimateSettings.from_mapping(config["gradient_estimate"])
    except ValueError as error:
        raise ConfigError(f"config: {error}") from None
    forward = forward_selection_settings(config)
    if forward is not None and not 1 <= forward["max_size"] <= k:
        raise ConfigError(
            f"config: subsets.forward_selection.max_size = {forward['max_size']} must be "
            f"between 1 and the number of tasks k = {k} (it counts the target task)"
        )
    clustering = config["clustering"]
    n_clusters = clustering["n_clusters"]
    if n_clusters != "auto":
        try:
            check_n_clusters(n_clusters, k)
        except ValueError as error:
            raise ConfigError(f"config: {error}") from None
    if n_clusters == "auto" and k < 3:
        raise ConfigError(
            f"config: clustering.n_clusters = 'auto' needs at least 3 tasks; k = {k}"
        )
    baselines = config["evaluation"]["baselines"]
    unknown = sorted(set(baselines) - set(BASELINES) - {"random"})
    if unknown:
        raise ConfigError(
            f"config: evaluation.baselines has {unknown}; expected a subset of "
            f"{list(BASELINES) + ['random']}"
        )
    if "planted" in baselines and not has_planted_groups(config["dataset"]):
        kind = config["dataset"]["kind"]
        others = [name for name in baselines if name != "planted"]
        drop = (
            f"drop 'planted' from evaluation.baselines (evaluation.baselines: {others})"
            if others else "drop 'planted' from evaluation.baselines (e.g. [naive_mtl, stl])"
        )
        raise ConfigError(
            f"config: evaluation.baselines lists 'planted' (as the default config does), but "
            f"dataset.kind = {kind!r} has no planted groups (no known grouping of its tasks "
            f"to compare with). Either {drop}, or name the known grouping: "
            + GROUPING_KEYS.get(kind, f"see dataset.{kind}")
        )


def random_design_users(config: dict) -> list[str]:
    """What the config computes from pairs of tasks on the random design (subsets.*), each
    named with its config key: the higher-order affinity and the surrogates; empty when
    neither is configured."""
    users = []
    if "higher_order" in config["affinity"]["sources"]:
        users.append("the higher-order affinity (affinity.sources lists higher_order)")
    if config["surrogates"]["enabled"]:
        users.append("the surrogates (surrogates.enabled: true)")
    return users


def check_pair_coverage(n_tasks: int, size: int, count: int, users: list[str]) -> None:
    """Raise ConfigError if the random design of ``count`` subsets of ``size`` out of
    ``n_tasks`` tasks cannot compare pairs of tasks: subsets of the whole task set (every
    pair in every subset: a constant affinity), or an expected pair coverage
    m a (a - 1) / (k (k - 1)) below :data:`MIN_PAIR_COVERAGE` (subsets of one task cover
    none). The message names a count and a size that would cover the pairs. ``users`` are
    the config settings that need the pairs (:func:`random_design_users`), named in it."""
    needed_by = " and ".join(users)
    design = f"subsets.size (alpha) = {size} and subsets.count (m) = {count}"
    if size == n_tasks:
        raise ConfigError(
            f"config: {design}: every subset is the whole set of k = {n_tasks} tasks, so "
            f"every pair of tasks shares the same subsets and {needed_by} cannot tell "
            f"pairs apart (a constant affinity). Choose subsets.size "
            f"between 2 and k - 1 = {n_tasks - 1}"
            + (f", e.g. {fix}" if (fix := covering_fixes(n_tasks, size, count)) else "")
        )
    coverage = expected_pair_count(n_tasks, size, count) if n_tasks > 1 else 0.0
    if coverage >= MIN_PAIR_COVERAGE:
        return
    fix = covering_fixes(n_tasks, size, count)
    raise ConfigError(
        f"config: {design} put a pair of the k = {n_tasks} tasks in {coverage:.3g} subsets "
        f"on average (m a (a - 1) / (k (k - 1))), "
        + ("so no pair of tasks shares a subset" if size == 1 else
           f"so about {math.exp(-coverage):.0%} of the pairs share none")
        + f"; {needed_by} {'need' if len(users) > 1 else 'needs'} at least "
        f"{MIN_PAIR_COVERAGE:g}. "
        + (f"Use {fix}" if fix else
           f"With k = {n_tasks} tasks no random design has pairs to compare: leave "
           "higher_order out of affinity.sources and set surrogates.enabled to false")
    )


def covering_fixes(n_tasks: int, size: int, count: int) -> str:
    """The designs near (size, count) whose expected pair coverage reaches
    :data:`MIN_PAIR_COVERAGE` with sizes between 2 and k - 1, as text: the count this size
    needs, and the smallest size that this count covers; '' when k < 3 (no such size)."""

    def count_for(alpha: int) -> int:
        return math.ceil(MIN_PAIR_COVERAGE * n_tasks * (n_tasks - 1) / (alpha * (alpha - 1)))

    options = []
    if 2 <= size <= n_tasks - 1:
        options.append(f"subsets.count >= {count_for(size)}")
    larger = [
        alpha for alpha in range(max(size + 1, 2), n_tasks)
        if expected_pair_count(n_tasks, alpha, count) >= MIN_PAIR_COVERAGE
        and math.comb(n_tasks, alpha) >= count
    ]
    if larger:
        options.append(f"subsets.size = {larger[0]}")
    if not options and n_tasks >= 3:
        alpha = min(max(size, 2), n_tasks - 1)
        options.append(f"subsets.size = {alpha} with subsets.count >= {count_for(alpha)}")
    return " or ".join(options)


def forward_selection_settings(config: dict) -> dict | None:
    """The ``subsets.forward_selection`` section (enabled, max_size, min_improvement) when
    forward selection is enabled, else None (also when the section is absent)."""
    section = config["subsets"].get("forward_selection") or {}
    return section if section.get("enabled", False) else None


def needs_pair_design(config: dict) -> bool:
    """Whether the singletons-and-pairs design must be valued: for the pairwise affinity
    source, or as the ground truth that the surrogates' negative-transfer calls are scored on."""
    return "pairwise" in config["affinity"]["sources"] or config["surrogates"]["enabled"]


def pair_sample(config: dict, n_tasks: int) -> dict | None:
    """How the pair design samples its pairs for ``n_tasks`` tasks: {"per_task", "seed"}
    from ``subsets.pairs`` when k > ``sample_above_tasks`` and ``per_task`` < k - 1 (a
    sample smaller than every pair), else None (every pair is valued)."""
    section = config["subsets"]["pairs"]
    if n_tasks <= section["sample_above_tasks"] or section["per_task"] >= n_tasks - 1:
        return None
    return {"per_task": section["per_task"], "seed": section["seed"]}


def pair_design_size(n_tasks: int, sample: dict | None) -> int:
    """Subsets of the pair design: k singletons + k (k - 1) / 2 pairs, or with ``sample``
    (:func:`pair_sample`) k singletons + k per_task / 2 sampled pairs."""
    if sample is None:
        return n_tasks + n_tasks * (n_tasks - 1) // 2
    return n_tasks + sampled_pair_count(n_tasks, sample["per_task"])


def pair_design_users(config: dict) -> list[str]:
    """What needs the singletons-and-pairs design (:func:`needs_pair_design`), each named
    with its config key."""
    users = []
    if "pairwise" in config["affinity"]["sources"]:
        users.append("the pairwise affinity (affinity.sources lists pairwise)")
    if config["surrogates"]["enabled"]:
        users.append(
            "the surrogates' negative-transfer scores (surrogates.enabled: true)"
        )
    return users


def check_pair_design_size(
    n_tasks: int, sample: dict | None, chunk_size: int, users: list[str]
) -> None:
    """Raise ConfigError if the singletons-and-pairs design of ``n_tasks`` tasks (every
    pair, or the pairs ``sample`` draws, see :func:`pair_sample`) has more than
    :data:`MAX_PAIR_DESIGN_SUBSETS` subsets, naming the count, the jobs of ``chunk_size``
    subsets it would take, what needs it (``users``, from :func:`pair_design_users`) and how
    to do without it."""
    size = pair_design_size(n_tasks, sample)
    if size <= MAX_PAIR_DESIGN_SUBSETS:
        return
    if sample is not None:
        raise ConfigError(
            f"config: the sampled pair design for k = {n_tasks} tasks has {size:,} subsets "
            f"(k singletons and k x subsets.pairs.per_task / 2 = {size - n_tasks:,} pairs), "
            f"more than {MAX_PAIR_DESIGN_SUBSETS:,}; lower subsets.pairs.per_task "
            f"(now {sample['per_task']})"
        )
    fixes = []
    if any("pairwise" in user for user in users):
        fixes.append("drop pairwise from affinity.sources")
    if any("surrogates" in user for user in users):
        fixes.append("set surrogates.enabled: false")
    largest = max(
        k for k in range(1, n_tasks) if pair_design_size(k, None) <= MAX_PAIR_DESIGN_SUBSETS
    )
    raise ConfigError(
        f"config: {' and '.join(users)} {'need' if len(users) > 1 else 'needs'} the "
        f"singletons-and-pairs design, which for k = {n_tasks} tasks has {size:,} subsets "
        f"(k + k (k - 1) / 2), valued in {n_chunks(size, chunk_size):,} jobs of "
        f"subsets.chunk_size = {chunk_size}; more than {MAX_PAIR_DESIGN_SUBSETS:,} "
        f"subsets are refused. To avoid it, {' and '.join(fixes)} (the higher-order "
        f"affinity on the random design of subsets.* still works), or keep at most "
        f"{largest} tasks, or sample the pairs (subsets.pairs.sample_above_tasks below k)"
    )


def run_summary(config: dict, n_tasks: int) -> list[str]:
    """A few lines on what the validated ``config`` decided, for the console when the
    workflow is parsed: the dataset, its kind and k = ``n_tasks``, the tasks left out by
    name, the estimator, the random design's expected pair coverage (when the higher-order
    affinity or the surrogates read it) and the size of the singletons-and-pairs design
    (when it is valued)."""
    dataset = config["dataset"]
    section = dataset_section(dataset)
    lines = [
        f"dataset {dataset['name']!r} (dataset.kind: {dataset['kind']}), k = {n_tasks} "
        f"tasks; estimator: {config['estimator']}; results in results/{dataset['name']}/"
    ]
    excluded = section.get("exclude_tasks") or []
    if excluded:
        shown = ", ".join(repr(str(task)) for task in excluded[:10])
        more = f", ... ({len(excluded)} in all)" if len(excluded) > 10 else ""
        lines.append(
            f"left out (dataset.{dataset['kind']}.exclude_tasks): {shown}{more}"
        )
    subsets = config["subsets"]
    if random_design_users(config) and n_tasks > 1:
        coverage = expected_pair_count(n_tasks, subsets["size"], subsets["count"])
        lines.append(
            f"random design: {subsets['count']} subsets of {subsets['size']} tasks; a pair "
            f"of tasks is in {coverage:.3g} subsets on average (about "
            f"{math.exp(-coverage):.0%} of the pairs in none)"
        )
    if needs_pair_design(config):
        sample = pair_sample(config, n_tasks)
        pairs = (
            "every pair" if sample is None
            else f"{sample['per_task']} sampled pairs per task (subsets.pairs)"
        )
        lines.append(
            f"pair design: {pair_design_size(n_tasks, sample)} subsets (every task alone and "
            f"{pairs})"
        )
    return lines


def missing_intermediates(
    metadata_dir: str | os.PathLike, results_dir: str
) -> dict[str, list[str]]:
    """Files under ``results_dir`` that are missing although files made from them exist:
    missing input -> the existing outputs that Snakemake recorded as made from it, both as
    Snakemake writes them (relative to the working directory).

    Read from Snakemake's metadata (``metadata_dir``, ``.snakemake/metadata``: one JSON
    record per output file, named by the urlsafe base64 of its path, cut into pieces that
    start with '@' when longer than a file name may be, holding the job's ``input``).
    Snakemake writes a deleted intermediate again only when a job that has to run needs it,
    so after a completed run a plain rerun leaves it missing ("Nothing to be done"); only
    ``--forcerun <file>`` writes it again. A record that cannot be read is skipped, and
    with another persistence backend there is no such folder: then nothing is found."""
    root = Path(metadata_dir)
    if not root.is_dir():
        return {}
    prefix = results_dir.rstrip("/") + "/"
    found: dict[str, list[str]] = {}
    exists: dict[str, bool] = {}
    for record in root.rglob("*"):
        if not record.is_file() or record.name.startswith("@"):
            continue
        pieces = [part.lstrip("@") for part in record.relative_to(root).parts]
        try:
            output = base64.urlsafe_b64decode("".join(pieces)).decode()
        except (ValueError, UnicodeDecodeError):
            continue
        if not output.startswith(prefix) or not os.path.exists(output):
            continue
        try:
            inputs = json.loads(record.read_text()).get("input") or []
        except (OSError, ValueError, AttributeError):
            continue
        for path in inputs:
            if not isinstance(path, str) or not path.startswith(prefix):
                continue
            if path not in exists:
                exists[path] = os.path.exists(path)
            if not exists[path]:
                found.setdefault(path, []).append(output)
    return {path: sorted(found[path]) for path in sorted(found)}


def missing_intermediate_lines(missing: dict[str, list[str]]) -> list[str]:
    """Console lines on :func:`missing_intermediates`: each missing file with a few of the
    files made from it, then the one command that writes them all again (and reruns what is
    made from them); none when nothing is missing."""
    if not missing:
        return []
    lines = []
    for path, made in missing.items():
        shown = ", ".join(made[:3]) + (f", ... ({len(made)} in all)" if len(made) > 3 else "")
        lines.append(f"{path} is missing, but files made from it exist ({shown})")
    lines.append(
        "Snakemake writes a missing file again only when a job that has to run reads it, so "
        "a plain run may leave " + ("it" if len(missing) == 1 else "them") + " missing; to "
        "regenerate (and rerun what is made from " + ("it" if len(missing) == 1 else "them")
        + f"): snakemake --cores 2 --forcerun {' '.join(missing)}"
    )
    return lines


def sorted_deep(value):
    """``value`` with the keys of every mapping in it sorted, at every level (lists keep
    their order). Snakemake compares a rule's params by their text, so a config whose keys
    are only reordered must give the same params."""
    if isinstance(value, dict):
        return {key: sorted_deep(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_deep(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """``python -m taskgroup.config FILE..``: check that each config file is YAML with keys
    at the top level (:func:`check_yaml_file`), printing its error (file, line, column) or
    that it is fine; exit status 1 if any is not. Snakemake reads a file given with
    ``--configfile`` before the workflow starts, and its message for a YAML error names
    neither the file nor the line; this one does."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m taskgroup.config CONFIG.yaml [MORE.yaml ..]", file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        if not os.path.isfile(path):
            print(f"{path}: file not found", file=sys.stderr)
            failed = True
            continue
        try:
            check_yaml_file(path)
        except ConfigError as error:
            print(error, file=sys.stderr)
            failed = True
        else:
            print(f"{path}: valid YAML with keys at the top level")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
