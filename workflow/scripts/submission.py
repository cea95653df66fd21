import json
from pathlib import Path

from ptxseg.data.siim import read_index
from ptxseg.ensemble.submission import PredictionFiles, write_submission
from ptxseg.io.maps import SUFFIX
from ptxseg.logs import to_file

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        index = read_index(snakemake.input.index)
        folds = range(snakemake.params.n_folds)
        seg_dirs = {Path(p).parent.name: Path(p).parent for p in snakemake.input.segmenters}
        predictions = PredictionFiles(
            segmenters={a: [d / f"fold{k}{SUFFIX}" for k in folds] for a, d in seg_dirs.items()},
            segmenter_ids={a: d / "ids.csv" for a, d in seg_dirs.items()},
            classifiers={Path(p).parent.name: Path(p) for p in snakemake.input.classifiers},
        )
        ensemble = json.loads(Path(snakemake.input.ensemble).read_text())
        write_submission(
            index[index["split"] == "test"], predictions, ensemble, snakemake.output.submission
        )
