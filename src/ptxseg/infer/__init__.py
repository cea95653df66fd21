"""Prediction with test-time augmentation."""
