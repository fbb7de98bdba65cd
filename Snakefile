from snakemake.utils import min_version

min_version("9.0")


from taskgroup.config import check_yaml_file

# Snakemake's message for a config file that is not YAML names neither the file nor the line.
check_yaml_file("config/config.yaml")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/groups.smk"
include: "rules/prepare.smk"
include: "rules/meta_init.smk"
include: "rules/subsets.smk"
include: "rules/finetune.smk"
include: "rules/estimate.smk"
include: "rules/subset_values.smk"
include: "rules/forward.smk"
include: "rules/validate.smk"
include: "rules/affinity.smk"
include: "rules/surrogates.smk"
include: "rules/cluster.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/recommend.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


onsuccess:
    # The last lines of a successful run: the verdict, when the recommendation was made.
    verdict = Path(f"results/{DATASET}/recommendation/verdict.md")
    if verdict.exists():
        print(f"\nRecommendation ({verdict}):")
        print("\n".join(verdict.read_text().splitlines()[:3]))
