from pathlib import Path

from ptxseg.data.repack import read_manifest
from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.held_out import OneFold
from ptxseg.train.scaling_job import train_candidate
from ptxseg.train.settings import FitSettings

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, inputs, config = snakemake.params, snakemake.input, snakemake.config
        runtime = Runtime.from_config(config["runtime"], p.train, snakemake.threads)  # how it runs
        size = int(read_manifest(inputs.manifest)["size"].iloc[0])  # the repack the rule chose
        data = OneFold(
            p.scaling["fold"],
            inputs.folds,
            inputs.manifest,
            inputs.stats,
            size,
            inputs.rle,
            inputs.index,
            p.grid,
        )
        train_candidate(
            data,
            name=snakemake.wildcards.candidate,
            scaling=p.scaling,
            settings=FitSettings.from_config(p.scaling["recipe"], p.seed, runtime),
            out_dir=Path(snakemake.output.row).parent,
            state_path=p.state,
        )
