from taskgroup.config import planted_spec
from taskgroup.datasets.planted import generate_planted
from taskgroup.logs import log_to_file
from taskgroup.tables import write_table

log_to_file(snakemake.log[0])
examples, tasks = generate_planted(planted_spec(snakemake.params.planted))
write_table(examples, snakemake.output.examples)
write_table(tasks, snakemake.output.tasks)
