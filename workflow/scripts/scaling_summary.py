from ptxseg.logs import to_file
from ptxseg.report.build import build_scaling_report
from ptxseg.report.scaling import write_summary

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, out = snakemake.params, snakemake.output
        write_summary(
            snakemake.input.rows,
            p.base_resolution,
            p.phis,
            p.grid,
            out.summary,
            out.plot,
            out.best,
            out.search,
            p.resolution_keys,
            b0_recipe=p.b0_recipe,
            dropout_by_phi=p.dropout_by_phi,
        )
        build_scaling_report(out.summary, out.search, out.plot, out.report)
