from ptxseg.data.repack import fingerprint_siim
from ptxseg.logs import to_file

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        fingerprint_siim(
            snakemake.input.index, snakemake.output.fingerprints, workers=snakemake.threads
        )
