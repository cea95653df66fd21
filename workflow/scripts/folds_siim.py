from ptxseg.data.folds import write_folds
from ptxseg.logs import to_file

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        folds = snakemake.params.folds
        write_folds(
            snakemake.input.index,
            snakemake.output.folds,
            folds["n_folds"],
            folds["group_by"],
            snakemake.params.seed,
            overlap_path=snakemake.input.overlap,
            summary_path=snakemake.output.summary,
        )
