from pathlib import Path

import ptxseg
from ptxseg.logs import to_file
from ptxseg.report.build import ReportInputs, build_report
from ptxseg.report.result import Provenance

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        # Read, not declared as params: the page says which config and code built it, and a new
        # commit or config does not by itself rebuild it.
        provenance = Provenance.of(
            snakemake.config["data"]["source"], snakemake.config, Path(ptxseg.__file__).parent
        )
        inputs = ReportInputs.of(dict(snakemake.input.items()))
        build_report(inputs, snakemake.output.html, provenance=provenance)
