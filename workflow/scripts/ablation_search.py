from ptxseg.ensemble.ablation import lever_oof_files
from ptxseg.ensemble.search import search_rule
from ptxseg.layout import RESULTS
from ptxseg.logs import to_file

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p = snakemake.params
        classifiers, segmenters = lever_oof_files(
            RESULTS, snakemake.wildcards.lever, p.classify_archs, p.arch, p.n_folds, p.kept
        )
        search_rule(p, snakemake.input, snakemake.output, classifiers, segmenters)
