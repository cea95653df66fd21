"""How models run, whatever the stage: device, precision, batched prediction, checkpoint files.

Below train and infer, above models: both training and prediction use it, and it knows no stage.
"""
