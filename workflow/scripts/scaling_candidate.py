from pathlib import Path

from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.scaling_job import train_candidate

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p = snakemake.params
        train_candidate(
            name=snakemake.wildcards.candidate,
            grid=p.scaling["grid"],
            target=p.scaling["target"],
            tolerance=p.scaling["tolerance"],
            base_resolution=p.scaling["base_resolution"],
            repack_sizes=p.sizes,
            fold=p.scaling["fold"],
            folds_csv=snakemake.input.folds,
            manifest_csv=snakemake.input.manifest,
            repack_root=Path(snakemake.input.manifest).parent,
            stats_json=snakemake.input.stats,
            recipe=p.scaling["recipe"],
            out_dir=Path(snakemake.output.row).parent,
            state_path=p.state,
            seed=p.seed,
            runtime=Runtime.from_config(p.runtime, snakemake.threads),
            tuning_grid=p.grid,
            rle_csv=snakemake.input.rle,
            index_csv=snakemake.input.index,
        )
