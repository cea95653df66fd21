from ptxseg.layout import RESULTS
from ptxseg.logs import to_file
from ptxseg.report.ablation import build_ablation_report, write_summary

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, out = snakemake.params, snakemake.output
        table, warnings = write_summary(
            RESULTS, p.levers, p.overrides, p.arch, p.n_folds, out.summary
        )
        build_ablation_report(table, warnings, p.arch, p.n_folds, out.report)
