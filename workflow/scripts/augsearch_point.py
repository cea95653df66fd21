from pathlib import Path

from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.augsearch_job import train_point
from ptxseg.train.settings import FitSettings

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, config = snakemake.params, snakemake.config  # config: only its how-it-runs keys
        runtime = Runtime.from_config(config["runtime"], p.train, snakemake.threads)
        train_point(
            point=snakemake.wildcards.point,
            arch=p.arch["name"],
            fold=p.fold,
            folds_csv=snakemake.input.folds,
            manifest_csv=snakemake.input.manifest,
            stats_json=snakemake.input.stats,
            size=p.size,
            settings=FitSettings.from_config(p.arch["recipe"], p.seed, runtime),
            weights=p.arch["weights"],
            options=p.arch["options"],
            weights_dir=config["models"]["weights_dir"],
            out_dir=Path(snakemake.output.row).parent,
            state_path=p.state,
            rle_csv=snakemake.input.rle,
            index_csv=snakemake.input.index,
            tuning_grid=p.grid,
        )
