from pathlib import Path

from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.scaling_job import train_candidate
from ptxseg.train.settings import FitSettings

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, config = snakemake.params, snakemake.config  # config: only its how-it-runs keys
        runtime = Runtime.from_config(config["runtime"], p.train, snakemake.threads)
        train_candidate(
            name=snakemake.wildcards.candidate,
            scaling=p.scaling,
            folds_csv=snakemake.input.folds,
            manifest_csv=snakemake.input.manifest,
            stats_json=snakemake.input.stats,
            settings=FitSettings.from_config(p.scaling["recipe"], p.seed, runtime),
            out_dir=Path(snakemake.output.row).parent,
            state_path=p.state,
            rle_csv=snakemake.input.rle,
            index_csv=snakemake.input.index,
            tuning_grid=p.grid,
        )
