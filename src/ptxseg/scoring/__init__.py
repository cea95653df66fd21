"""The competition metric on stored maps: triplet binarisation, cascade score grids, native-size scoring.

NumPy and the data layer only (no torch), below train, infer and ensemble: each of them scores maps
the same way.
"""
