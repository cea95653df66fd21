from pathlib import Path

from ptxseg.logs import to_file
from ptxseg.runtime.options import Runtime
from ptxseg.train.run import NihImages, stage_repacks, train_fold
from ptxseg.train.settings import FitSettings

# Guarded: the data rules start worker processes, which import this file again.
if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p, config = snakemake.params, snakemake.config  # config: only its how-it-runs keys
        runtime = Runtime.from_config(config["runtime"], p.train, snakemake.threads)
        settings = FitSettings.from_config(p.arch["recipe"], p.seed, runtime)
        weights = snakemake.input.init if p.arch["weights"] == "nih" else p.arch["weights"]
        nih = None
        if snakemake.rule == "train_segmenter_round2":  # the NIH second round
            settings = settings.for_round2(p.round2)
            weights = snakemake.input.init if p.round2["init"] == "round1" else p.arch["weights"]
            nih = NihImages(
                snakemake.input.candidates, p.size, getattr(snakemake.input, "labels", None)
            )
        train_fold(
            kind="classifier" if snakemake.rule == "train_classifier" else "segmenter",
            arch=snakemake.wildcards.arch,
            fold=int(snakemake.wildcards.fold),
            folds_csv=snakemake.input.folds,
            manifest_csv=snakemake.input.manifest,
            stats_json=snakemake.input.stats,
            size=p.size,
            settings=settings,
            weights=weights,
            options=p.arch["options"],
            weights_dir=config["models"]["weights_dir"],
            out_dir=Path(snakemake.output.summary).parent,
            state_path=p.state,
            stage_repacks=stage_repacks(snakemake.input),
            nih=nih,
        )
