# ptxseg: pneumothorax classification + segmentation cascade on chest X-rays (SIIM-ACR 2019).
# Rules hold paths, parameters and resources; all logic lives in the ptxseg package.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version

from ptxseg.config import load_schema, siim_layout, validate

# Snakemake 9: the executor plugins, storage of params for rerun triggers and `workflow` attributes
# used below.
min_version("9.0")

# Rule scripts import ptxseg from this checkout, also inside --use-conda environments
# (envs/ptxseg.yaml holds the dependencies; the package itself is this folder's src/).
_src = str(Path(workflow.basedir) / "src")
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [_src, os.environ.get("PYTHONPATH")]))
)


# A config named with --configfile is the whole config: the embedded default (the demo) is read only
# when none is named, so none of its keys leaks into another (--config key=value still overrides).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# Validated once at DAG build: unknown keys and wrong types stop here, naming the key.
config.update(validate(config, load_schema()))
# The SIIM-ACR layout, found at DAG build from folder and file names (seconds, no image read): a
# download the index could not read stops here, naming the folder and the fix.
SIIM_LAYOUT = siim_layout(config)
if config["data"]["source"] == "files":
    print(SIIM_LAYOUT.describe(), file=sys.stderr)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/pseudo.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/scaling.smk"
include: "workflow/rules/augsearch.smk"
include: "workflow/rules/ablation.smk"


# Seconds-long rules (at the full size 2-31 s and under 0.7 GiB each in the scale rehearsal,
# benchmarks/README.md) run in Snakemake's own process under a cluster profile: an sbatch job and
# its queue wait would cost more than the work.
localrules:
    all,
    folds_siim,
    index_nih,
    exclude_siim_from_nih,
    submission,
    report,
    model_card,
    augsearch_summary,
    scaling_summary,
    ablation_summary,


rule all:
    default_target: True
    input:
        data_targets(),
        train_targets(),
        ensemble_targets(),
