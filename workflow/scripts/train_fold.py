from pathlib import Path

from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.run import train_fold

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p = snakemake.params
        weights = p.arch["weights"]
        train_fold(
            kind="classifier" if snakemake.rule == "train_classifier" else "segmenter",
            arch=snakemake.wildcards.arch,
            fold=int(snakemake.wildcards.fold),
            folds_csv=snakemake.input.folds,
            manifest_csv=snakemake.input.manifest,
            repack_root=Path(snakemake.input.manifest).parent,
            stats_json=snakemake.input.stats,
            size=p.size,
            recipe=p.arch["recipe"],
            weights=snakemake.input.init if weights == "nih" else weights,
            options=p.arch["options"],
            weights_dir=p.weights_dir,
            out_dir=Path(snakemake.output.summary).parent,
            state_path=p.state,
            seed=p.seed,
            runtime=Runtime.from_config(p.runtime, snakemake.threads),
            tuning_grid=p.grid,
        )
