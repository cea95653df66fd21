from ptxseg.data.siim import write_index
from ptxseg.logs import to_file

with to_file(snakemake.log.log):
    write_index(
        snakemake.input.train,
        snakemake.input.test,
        snakemake.input.rle,
        snakemake.output.index,
        snakemake.log.rejects,
        stop_on_rejects=snakemake.params.stop_on_rejects,
        workers=snakemake.threads,
    )
