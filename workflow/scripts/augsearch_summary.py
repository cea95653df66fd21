from ptxseg.logs import to_file
from ptxseg.report.augsearch import build_augsearch_report, write_summary

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        out = snakemake.output
        write_summary(
            snakemake.input.rows,
            snakemake.params.grid,
            out.summary,
            out.heatmap,
            out.best,
            out.search,
        )
        build_augsearch_report(out.summary, out.search, out.heatmap, out.report)
