"""Import trl 0.24 beside transformers 5.8 and LLaMA-Factory for the fixture scripts.

trl 0.24 treats transformers 5.8's `_is_package_available` result (a tuple) as a bool, so it
imports every optional extra (mergekit, weave, …); this gives it the bool it expects while it
loads. torchaudio, which LLaMA-Factory imports but the fixtures do not use, is stubbed when absent.
"""
import importlib.machinery
import os
import sys
import types

os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
try:
    import torchaudio  # noqa: F401
except Exception:
    _ta = types.ModuleType("torchaudio")
    _ta.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = _ta

import transformers.utils.import_utils as _tiu  # noqa: E402

_orig_available = _tiu._is_package_available


def _for_trl(*a, **k):
    r = _orig_available(*a, **k)
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if caller.startswith("trl") and isinstance(r, tuple) and not k.get("return_version"):
        return r[0]
    return r


_tiu._is_package_available = _for_trl
import trl  # noqa: E402,F401
import trl.trainer.dpo_trainer  # noqa: E402,F401
import trl.trainer.kto_trainer  # noqa: E402,F401

_tiu._is_package_available = _orig_available
