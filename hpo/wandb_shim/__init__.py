"""A stand-in ``wandb`` package for scripts that hpo runs (``program:`` sweeps).

``hpo.program.run_program`` puts this directory first on the script's ``PYTHONPATH`` so
that ``import wandb`` finds :mod:`hpo.wandb_shim.wandb` instead of the real package: when
``$HPO_WANDB_SHIM=1`` (or ``trainer_args.wandb_shim: true``), or, by default, when the real
``wandb`` is not importable. ``wandb.init()``, ``wandb.config``, ``wandb.log()``,
``wandb.summary`` and ``wandb.finish()`` then talk to hpo only; nothing contacts W&B.
"""

from pathlib import Path

#: The directory to put on PYTHONPATH (it holds the ``wandb`` package).
SHIM_DIR = str(Path(__file__).resolve().parent)

__all__ = ["SHIM_DIR"]
