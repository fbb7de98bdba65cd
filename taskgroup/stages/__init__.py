"""One function per workflow stage: read the stage's input files, compute, write its outputs.

The Snakemake scripts in ``workflow_scripts/`` only unpack ``snakemake.input/params/output``
and call these, so every stage can be run and tested without Snakemake. Outputs are written
atomically (:func:`taskgroup.data.tables.write_table`); a failing stage leaves none. The stages
live in separate modules so that a job imports only what it needs (scikit-learn alone
costs a training job about a second of start-up).
"""
