from ptxseg.logs import to_file
from ptxseg.report.model_card import write_model_card

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        write_model_card(
            **dict(snakemake.input.items()),
            demo=snakemake.params.demo,
            out_md=snakemake.output.md,
        )
