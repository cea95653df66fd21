from collections import defaultdict

from ptxseg.infer.test_set import predict_classifier, predict_segmenter
from ptxseg.layout import fold_of
from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, config = snakemake.params, snakemake.config  # config: only its how-it-runs keys
        fold_models = defaultdict(list)
        for path in snakemake.input.models:
            fold_models[fold_of(path)].append(path)
        common = dict(
            fold_models=dict(fold_models),
            manifest_csv=snakemake.input.manifest,
            stats_json=snakemake.input.stats,
            size=p.size,
            runtime=Runtime.from_config(config["runtime"], p.train, snakemake.threads),
        )
        if snakemake.rule == "predict_classifier":
            predict_classifier(out_csv=snakemake.output.probabilities, **common)
        else:
            out_maps = {fold_of(path): path for path in snakemake.output.maps}
            predict_segmenter(out_maps=out_maps, out_ids=snakemake.output.ids, **common)
