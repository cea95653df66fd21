from ptxseg.data.pseudo_labels import sample_candidates
from ptxseg.logs import to_file

with to_file(snakemake.log[0]):
    sample_candidates(
        snakemake.input.index,
        snakemake.input.overlap,
        snakemake.params.n,
        snakemake.params.seed,
        snakemake.output.candidates,
    )
