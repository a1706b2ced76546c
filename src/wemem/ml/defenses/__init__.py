"""The eight fine-tuning defenses (SPEC §7) as strategies for the one training loop.

=========  ===============  ==============================================
module     defenses         job
=========  ===============  ==============================================
base       base             registry, mask-keeping strategy, plain fine-tuning
memorisation rsw, rmr, swmr WeMem: windows over the mem-score ranking, risky batches (λ_r)
regularisers ppb, relaxloss losses of the existing defenses
adversarial adv             min-max game with an inference model
dpsgd      dpsgd            Poisson-sampled DP-Adam: clipping + noise, RDP ε accounting
dp_clip    —                vectorised per-sample clipping (ghost norms), frozen BatchNorm
schedule   —                settings → strategy; prune + fine-tune under one defense
=========  ===============  ==============================================

Adding a defense = one module in this package that registers a class in :data:`DEFENSES`
(with its nested ``Settings`` schema), plus a variant under ``defenses:`` in conf. Every module
of the package is imported here, so nothing else needs an edit.
"""

import importlib
import pkgutil

# registration order = the order tables list them in
from . import memorisation, regularisers, adversarial, dpsgd  # noqa: F401,I001  (register the defenses)
from .adversarial import ADV
from .base import DEFENSES, LAMBDA_G, Base, DefenseState, MaskedStrategy
from .dpsgd import DPSGD
from .memorisation import RMR, RSW, SWMR, TAU_MODES, risky_mask
from .regularisers import PPB, RelaxLoss, ppb_loss, relaxloss_flatten_loss, relaxloss_flatten_targets
# any other module of the package (a new defense) registers itself on import
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .schedule import (  # noqa: E402
    RISK_KEYS,
    build_strategy,
    defense_settings,
    finetune_config,
    parse_settings,
    prune_and_finetune,
    resolve_settings,
    setting_names,
)

__all__ = [
    "ADV", "DEFENSES", "DPSGD", "LAMBDA_G", "PPB", "RISK_KEYS", "RMR", "RSW", "SWMR", "TAU_MODES", "Base",
    "DefenseState", "MaskedStrategy", "RelaxLoss", "build_strategy", "defense_settings", "finetune_config",
    "parse_settings", "ppb_loss", "prune_and_finetune", "relaxloss_flatten_loss", "relaxloss_flatten_targets",
    "resolve_settings", "risky_mask", "setting_names",
]
