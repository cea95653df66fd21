"""Training: one plain-PyTorch loop for classifiers and segmenters, with its losses, metrics,
schedules (warm-up, cosine restarts with snapshots, plateau), SWA, sampling and checkpoints."""
