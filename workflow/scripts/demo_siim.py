from pathlib import Path

from ptxseg.data.demo import DemoSpec, write_siim_demo
from ptxseg.logs import to_file

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        out_dir = Path(snakemake.output.rle).parent
        write_siim_demo(
            out_dir, DemoSpec(**snakemake.params.demo), snakemake.params.seed, snakemake.threads
        )
