from pathlib import Path

from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.augsearch_job import train_point
from ptxseg.train.held_out import OneFold
from ptxseg.train.run import stage_repacks
from ptxseg.train.settings import FitSettings

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, inputs, config = snakemake.params, snakemake.input, snakemake.config
        runtime = Runtime.from_config(config["runtime"], p.train, snakemake.threads)  # how it runs
        data = OneFold(
            p.fold,
            inputs.folds,
            inputs.manifest,
            inputs.stats,
            p.size,
            inputs.rle,
            inputs.index,
            p.grid,
            stage_repacks(inputs),
        )
        train_point(
            data,
            point=snakemake.wildcards.point,
            arch=p.arch["name"],
            settings=FitSettings.from_config(p.arch["recipe"], p.seed, runtime),
            weights=p.arch["weights"],
            options=p.arch["options"],
            weights_dir=config["models"]["weights_dir"],
            out_dir=Path(snakemake.output.row).parent,
            state_path=p.state,
        )
