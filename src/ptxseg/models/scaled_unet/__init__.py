"""The compound-scaled U-Net (EfficientNet's rule applied to a U-Net): B0, B1, B2 and free multipliers.

- `compound`: the rounding rules, the compound maths and the search grid (`candidates`); plain
  Python, importable without torch (the Snakefile enumerates the grid's jobs at DAG build);
- `model`: the network (`ScaledUNet`, `build_scaled_unet`, `build_scaled_unet_b1`, `..._b2`).

Nothing is imported here, so importing the rules never imports torch: import from the two modules.
"""
