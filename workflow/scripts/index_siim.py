from ptxseg.data.layouts import SiimLayout
from ptxseg.data.siim import write_layout_index
from ptxseg.logs import to_file

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log.log):
        write_layout_index(
            SiimLayout.from_dict(snakemake.params.layout),
            snakemake.output.index,
            snakemake.log.rejects,
            labels_path=snakemake.output.labels,
            stop_on_rejects=snakemake.params.stop_on_rejects,
            workers=snakemake.threads,
        )
