from pathlib import Path

from ptxseg.data.repack import Normalisation, repack_nih
from ptxseg.logs import to_file

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        repack_nih(
            snakemake.input.index,
            out_root=Path(snakemake.output.manifest).parent,
            size=snakemake.params.size,
            params=Normalisation.from_config(snakemake.params.normalisation),
            manifest_path=snakemake.output.manifest,
            stats_path=snakemake.output.stats,
            workers=snakemake.threads,
            # The candidates' repack for the second round needs no fingerprints.
            fingerprints_path=getattr(snakemake.output, "fingerprints", None),
        )
