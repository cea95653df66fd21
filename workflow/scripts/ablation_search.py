from ptxseg.data.repack import Normalisation
from ptxseg.ensemble.ablation import lever_oof_files
from ptxseg.ensemble.search import Grid, preprocessing, run_search
from ptxseg.layout import RESULTS
from ptxseg.logs import to_file

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p = snakemake.params
        classifiers, segmenters = lever_oof_files(
            RESULTS, snakemake.wildcards.lever, p.classify_archs, p.arch, p.n_folds, p.kept
        )
        run_search(
            classifiers=classifiers,
            segmenters=segmenters,
            members=p.ensemble["members"],
            manifest_csv=snakemake.input.manifest,
            size=p.size,
            grid=Grid.from_config(p.ensemble["grid"]),
            rle_csv=snakemake.input.rle,
            index_csv=snakemake.input.index,
            weight_step=p.ensemble["weight_step"],
            search_size=p.ensemble["search_size"],
            out_json=snakemake.output.ensemble,
            out_scores=snakemake.output.scores,
            out_grid=snakemake.output.grid,
            out_images=snakemake.output.images,
            out_maps=snakemake.output.maps,
            positive_only=p.positive_only,
            preprocessing=preprocessing(
                Normalisation.from_config(p.normalisation),
                [snakemake.input.stats, snakemake.input.classify_stats],
                p.size,
                p.classify_size,
                p.n_folds,
                p.tta,
            ),
        )
