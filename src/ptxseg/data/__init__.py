"""Data stages: demo data, SIIM and NIH indexing, repacking, folds."""
