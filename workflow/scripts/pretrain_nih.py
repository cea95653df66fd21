from pathlib import Path

from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.run import pretrain_nih
from ptxseg.train.settings import FitSettings

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, config = snakemake.params, snakemake.config  # config: only its how-it-runs keys
        runtime = Runtime.from_config(config["runtime"], p.train, snakemake.threads)
        pretrain_nih(
            arch=snakemake.wildcards.arch,
            nih_index=snakemake.input.index,
            manifest_csv=snakemake.input.manifest,
            stats_json=snakemake.input.stats,
            size=p.size,
            settings=FitSettings.from_config(p.arch["recipe"], p.seed, runtime),
            weights=p.arch["weights"],
            options=p.arch["options"],
            weights_dir=config["models"]["weights_dir"],
            out_dir=Path(snakemake.output.model).parent,
            state_path=p.state,
            exclude_findings=p.exclude_findings,
            siim_overlap_csv=snakemake.input.overlap,
        )
