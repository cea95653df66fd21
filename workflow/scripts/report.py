from ptxseg.logs import to_file
from ptxseg.report.build import ReportInputs, build_report

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        build_report(ReportInputs.of(dict(snakemake.input.items())), snakemake.output.html)
