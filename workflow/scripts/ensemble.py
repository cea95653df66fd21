from pathlib import Path

from ptxseg.ensemble.search import Grid, preprocessing, run_search
from ptxseg.logs import to_file

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p = snakemake.params
        folds = range(p.n_folds)
        run_search(
            classifiers={
                a: {k: f"results/classify/{a}/fold{k}/oof.csv" for k in folds}
                for a in p.classify_archs
            },
            segmenters={
                a: {k: f"results/segment/{a}/fold{k}" for k in folds} for a in p.segment_archs
            },
            members=p.ensemble["members"],
            manifest_csv=snakemake.input.manifest,
            repack_root=Path(snakemake.input.manifest).parent,
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
            preprocessing=preprocessing(
                p.repack, snakemake.input.stats, p.size, p.classify_size, p.n_folds, p.tta
            ),
        )
