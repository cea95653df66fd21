from ptxseg.logs import to_file
from ptxseg.report.scaling import write_summary

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        write_summary(
            snakemake.input.rows,
            snakemake.params.base_resolution,
            snakemake.params.phis,
            snakemake.params.grid,
            snakemake.output.summary,
            snakemake.output.plot,
            snakemake.output.best,
            snakemake.output.search,
        )
