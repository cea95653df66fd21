from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.data.siim import read_index
from ptxseg.ensemble.submission import PredictionFiles, write_details, write_submission
from ptxseg.layout import RESULTS
from ptxseg.logs import to_file

if __name__ == "__main__":
    with to_file(snakemake.log[0]):
        p = snakemake.params
        index = read_index(snakemake.input.index)
        predictions = PredictionFiles.at(RESULTS, p.classify_archs, p.segment_archs, p.n_folds)
        ensemble = EnsembleSpec.read(snakemake.input.ensemble)
        test = index[index["split"] == "test"]
        write_submission(test, predictions, ensemble, snakemake.output.submission)
        write_details(test, predictions, ensemble, snakemake.output.details)
