from pathlib import Path

from ptxseg.data.repack import Normalisation, repack_siim
from ptxseg.logs import to_file

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        repack_siim(
            snakemake.input.index,
            snakemake.input.rle,
            out_root=Path(snakemake.output.manifest).parent,
            sizes=[int(snakemake.wildcards.size)],
            params=Normalisation.from_config(snakemake.params.normalisation),
            manifest_path=snakemake.output.manifest,
            stats_path=snakemake.output.stats,
            workers=snakemake.threads,
        )
