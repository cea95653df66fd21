from pathlib import Path

from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.run import stage_repacks, train_fold
from ptxseg.train.settings import FitSettings

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, config = snakemake.params, snakemake.config  # config: only its how-it-runs keys
        runtime = Runtime.from_config(config["runtime"], p.train, snakemake.threads)  # lever's TTA
        train_fold(
            kind="segmenter",
            arch=snakemake.wildcards.arch,
            fold=int(snakemake.wildcards.fold),
            folds_csv=snakemake.input.folds,
            manifest_csv=snakemake.input.manifest,
            stats_json=snakemake.input.stats,
            size=p.size,
            settings=FitSettings.from_config(p.arch["recipe"], p.seed, runtime),  # lever's recipe
            weights=p.arch["weights"],
            options=p.arch["options"],
            weights_dir=config["models"]["weights_dir"],
            out_dir=Path(snakemake.output.summary).parent,
            state_path=p.state,
            stage_repacks=stage_repacks(snakemake.input),
        )
