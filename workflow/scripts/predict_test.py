from collections import defaultdict
from pathlib import Path

from ptxseg.infer.test_set import predict_classifier, predict_segmenter
from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p = snakemake.params
        fold_models = defaultdict(list)
        for path in snakemake.input.models:  # results/<stage>/<arch>/fold<k>/model_<member>.pt
            fold_models[int(Path(path).parent.name[4:])].append(path)
        common = dict(
            fold_models=dict(fold_models),
            manifest_csv=snakemake.input.manifest,
            repack_root=Path(snakemake.input.manifest).parent,
            stats_json=snakemake.input.stats,
            size=p.size,
            runtime=Runtime.from_config(p.runtime, snakemake.threads),
        )
        if snakemake.rule == "predict_classifier":
            predict_classifier(out_csv=snakemake.output.probabilities, **common)
        else:
            predict_segmenter(out_dir=Path(snakemake.output.ids).parent, **common)
