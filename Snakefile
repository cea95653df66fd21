# ptxseg: pneumothorax classification + segmentation cascade on chest X-rays (SIIM-ACR 2019).
# Rules hold paths, parameters and resources; all logic lives in the ptxseg package.
import os
from pathlib import Path

from ptxseg.config import load_schema, validate

# Rule scripts import ptxseg from this checkout, also inside --use-conda environments
# (envs/ptxseg.yaml holds the dependencies; the package itself is this folder's src/).
_src = str(Path(workflow.basedir) / "src")
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [_src, os.environ.get("PYTHONPATH")]))
)


configfile: "config.yaml"


# Validated once at DAG build: unknown keys and wrong types stop here, naming the key.
config.update(
    validate(
        config,
        load_schema(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"),
    )
)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/scaling.smk"


rule all:
    default_target: True
    input:
        data_targets(),
        train_targets(),
        ensemble_targets(),
