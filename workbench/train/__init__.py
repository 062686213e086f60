"""The training subprocess: ``python -m workbench.train RUN_DIR [--resume]``.

Everything that touches torch, transformers, peft, trl or datasets lives in
this package, and only the submodules import them, so ``import
workbench.train`` (or :mod:`workbench.train.errors`) stays light.
"""
