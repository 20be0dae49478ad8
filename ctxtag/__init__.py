"""ctxtag: user-aware contextual music auto-tagging in JAX/Flax.

The public names for notebooks and scripts (docs/python.md), loaded when
first used so that `import ctxtag.x` stays as light as module x:

  open_run, Run        a trained run: tag, score, predictions, evaluate,
                       recommend (ctxtag.api)
  load_index           a catalog index (ctxtag.catalog)
  evaluate_tables      every protocol of prediction CSVs (ctxtag.api)
  Inputs, CsvFiles     what evaluation reads (ctxtag.evaluation.inputs)
  evaluate             the evaluators over Inputs (ctxtag.study)
  MODELS, Model        the model table (ctxtag.models)
  LABELS               the ten contexts in label order (ctxtag.labels)
"""

import importlib

__version__ = "0.1.0"

# Public name -> (module, attribute).
_EXPORTS = {
    "open_run": ("ctxtag.api", "open_run"),
    "Run": ("ctxtag.api", "Run"),
    "load_index": ("ctxtag.api", "load_index"),
    "evaluate_tables": ("ctxtag.api", "evaluate_tables"),
    "Inputs": ("ctxtag.evaluation.inputs", "Inputs"),
    "CsvFiles": ("ctxtag.evaluation.inputs", "CsvFiles"),
    "evaluate": ("ctxtag.study", "evaluate"),
    "MODELS": ("ctxtag.models", "MODELS"),
    "Model": ("ctxtag.models", "Model"),
    "LABELS": ("ctxtag.labels", "LABELS"),
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'ctxtag' has no attribute {name!r}")
  module, attribute = _EXPORTS[name]
  return getattr(importlib.import_module(module), attribute)
