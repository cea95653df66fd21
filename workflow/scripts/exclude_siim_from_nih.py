from ptxseg.data.overlap import exclude_siim_from_nih
from ptxseg.logs import to_file

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        exclude_siim_from_nih(
            snakemake.input.index,
            snakemake.input.nih,
            snakemake.input.siim,
            snakemake.output.overlap,
            snakemake.output.index,
            threads=snakemake.threads,
        )
