from pathlib import Path

from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.run import pretrain_nih

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p = snakemake.params
        pretrain_nih(
            arch=snakemake.wildcards.arch,
            nih_index=snakemake.input.index,
            manifest_csv=snakemake.input.manifest,
            repack_root=Path(snakemake.input.manifest).parent,
            stats_json=snakemake.input.stats,
            size=p.size,
            recipe=p.arch["recipe"],
            weights=p.arch["weights"],
            options=p.arch["options"],
            weights_dir=p.weights_dir,
            out_dir=Path(snakemake.output.model).parent,
            state_path=p.state,
            seed=p.seed,
            runtime=Runtime.from_config(p.runtime, snakemake.threads),
            exclude_findings=p.exclude_findings,
            siim_overlap_csv=snakemake.input.overlap,
        )
