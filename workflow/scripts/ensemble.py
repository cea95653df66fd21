from ptxseg.ensemble.oof import oof_files
from ptxseg.ensemble.search import search_rule
from ptxseg.layout import RESULTS
from ptxseg.logs import to_file

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p = snakemake.params
        classifiers, segmenters = oof_files(
            RESULTS, p.classify_archs, p.segment_archs, p.n_folds, p.kept
        )
        search_rule(p, snakemake.input, snakemake.output, classifiers, segmenters)
