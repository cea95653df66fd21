from ptxseg.data.nih import write_index
from ptxseg.logs import to_file

with to_file(snakemake.log.log):
    write_index(
        snakemake.input.images,
        snakemake.input.labels,
        snakemake.params.val_fraction,
        snakemake.params.seed,
        snakemake.output.index,
        snakemake.log.rejects,
        stop_on_rejects=snakemake.params.stop_on_rejects,
    )
