"""The competition metric on stored maps: triplet binarisation, cascade score grids, native-size scoring.

NumPy only, below train, infer and ensemble: each of them scores maps the same way.
"""
