from ptxseg.data.siim import write_index
from ptxseg.logs import to_file

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
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
