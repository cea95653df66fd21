"""The typed owners of the files stages share: ``ensemble.json`` (`ensemble_spec.EnsembleSpec`,
written by the search, read by the submission, the report, the model card and prediction) and
``scores.csv`` (`scores.ScoreTable`).

Below ``ensemble`` and above ``runtime`` in the layers, so that every stage that writes or reads
them shares one definition. No torch.
"""
