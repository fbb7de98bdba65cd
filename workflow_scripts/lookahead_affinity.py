from taskgroup.logs import log_to_file
from taskgroup.stages.affinity import lookahead_affinity

log_to_file(snakemake.log[0])
lookahead = snakemake.params.lookahead
lookahead_affinity(
    examples_path=snakemake.input.examples,
    tasks_path=snakemake.input.tasks,
    output_path=snakemake.output[0],
    hidden_sizes=snakemake.params.hidden_sizes,
    training=snakemake.params.training,
    seed=snakemake.params.seed,
    every=lookahead["every"],
    lookahead_lr=lookahead.get("lr"),
    threads=snakemake.threads,
)
