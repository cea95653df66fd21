from collections import defaultdict

import pandas as pd

from ptxseg.data.pseudo_labels import Bands
from ptxseg.infer.pseudo_labels import pseudo_label_fold
from ptxseg.layout import training_job_of
from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, config = snakemake.params, snakemake.config  # config: only its how-it-runs keys

        def by_arch(paths):
            models = defaultdict(list)
            for path in paths:
                models[training_job_of(path)[1]].append(path)
            return dict(models)

        overlap = pd.read_csv(snakemake.input.overlap, dtype=str, keep_default_na=False)
        pseudo_label_fold(
            fold=int(snakemake.wildcards.fold),
            segmenters=by_arch(snakemake.input.segmenters),
            classifiers=by_arch(snakemake.input.classifiers),
            candidates_manifest=snakemake.input.candidates,
            segment_stats=snakemake.input.segment_stats,
            classify_stats=snakemake.input.classify_stats,
            segment_size=p.segment_size,
            classify_size=p.classify_size,
            bands=Bands.from_config(p.bands),
            siim_images=overlap["nih_image_id"].tolist(),
            labels_csv=snakemake.output.labels,
            summary_json=snakemake.output.summary,
            runtime=Runtime.from_config(config["runtime"], p.train, snakemake.threads),
        )
