from ptxseg.infer.test_set import predict_classifier, predict_segmenter
from ptxseg.layout import by_fold, fold_of
from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.oof import predict_oof

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, config = snakemake.params, snakemake.config  # config: only its how-it-runs keys
        classifier = snakemake.rule == "predict_classifier"
        data = dict(
            manifest_csv=snakemake.input.manifest,
            stats_json=snakemake.input.stats,
            size=p.size,
            # One runtime, so one TTA, for the OOF and the test predictions.
            runtime=Runtime.from_config(config["runtime"], p.train, snakemake.threads),
        )
        # Every fold's kept models on the fold it held out, beside them.
        predict_oof(
            kind="classifier" if classifier else "segmenter",
            fold_models=by_fold(snakemake.input.kept),
            folds_csv=snakemake.input.folds,
            **data,
        )
        if snakemake.rule != "predict_ablation":  # an ablation lever has no test predictions
            common = dict(fold_models=by_fold(snakemake.input.models), **data)
            if classifier:
                predict_classifier(out_csv=snakemake.output.probabilities, **common)
            else:
                out_maps = {fold_of(path): path for path in snakemake.output.maps}
                predict_segmenter(out_maps=out_maps, out_ids=snakemake.output.ids, **common)
