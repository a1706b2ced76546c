"""The settings of the memorisation estimator: one schema for ``conf/base/parameters_memscore.yml``
(validated with the other parameters, handed to the nodes typed) and for the library functions.

The run values (model architecture, seed, device, progress bars) are not part of it: the library
functions take them as arguments.
"""

from __future__ import annotations

from ..schema import Fraction, NonNeg, Pos, PosInt, Section, Unit, choice, number

__all__ = ["ESTIMATORS", "FIRST_LAYERS", "MemScoreSettings"]

ESTIMATORS = ("correctness", "probability")
FIRST_LAYERS = ("auto", "sparse", "dense")


class MemScoreSettings(Section):
    """``memscore:`` the subsampling estimator (SPEC §4).

    Estimator:
        m: models in the estimate (at least 2); n_shards: separate nodes that train them.
        subset_fraction: r, the fraction of the train pool each model sees.
        epochs, batch_size, lr, weight_decay: each model's training.
        estimator: ``correctness`` (0/1, Feldman & Zhang) or ``probability`` (smoother).
        import_csv: a reference-format CSV to read instead of estimating (None: estimate).

    Speed settings (ColumnFC models only; see :mod:`wemem.ml.memorization`):
        models_per_chunk: models trained together as one stack (None: 16 on a CPU, where a
            bigger stack only spills the caches, and up to 256 on CUDA, bounded by memory).
        first_layer: ``auto`` (sparse on a CPU when the input density is below
            ``sparse_threshold``, dense otherwise and on CUDA), ``sparse`` or ``dense``.
        converge_acc: a model stops once its eval-mode accuracy on the first
            ``converge_check_rows`` samples of its own (random) subset is at least this, checked
            every ``converge_every`` epochs (None: always train ``epochs``).
    """

    m: number(int, 2) = 64
    subset_fraction: Fraction = 0.7
    epochs: PosInt = 30
    estimator: choice("estimator", ESTIMATORS) = "correctness"
    n_shards: PosInt = 1
    batch_size: PosInt = 128
    lr: Pos = 1e-3
    weight_decay: NonNeg = 5e-4
    import_csv: str | None = None
    models_per_chunk: PosInt | None = None
    first_layer: choice("first_layer", FIRST_LAYERS) = "auto"
    sparse_threshold: Unit = 0.25
    converge_acc: Unit | None = 0.99
    converge_every: PosInt = 2
    converge_check_rows: PosInt = 512
