"""Blending, threshold search, the classifier + segmenter cascade, and the submission."""
