"""taskgroup: decide which tasks of a multitask problem to train together.

The library holds all the logic of the Snakemake workflow in this repository; the
scripts in ``workflow_scripts/`` only unpack Snakemake's inputs and call it.
"""

__version__ = "0.1.0"
