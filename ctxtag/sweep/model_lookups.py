"""Every lookup the sweep makes of the models, derived from the model
table (ctxtag.models.MODELS): which it reads and in what order, which pairs
results.json compares, their names and plot styles.

Read live, so that a model a researcher registers before a sweep is in its
tables and plots too.
"""

from ctxtag import models

_NO_STYLE = ("o-", None)  # matplotlib picks the next colour


def model_order() -> tuple[str, ...]:
  """The models the sweep reads of a run, in the order it lists them."""
  return tuple(models.MODELS)


def comparisons() -> tuple[tuple[str, str], ...]:
  """The (a, b) pairs whose `<a>_vs_<b>` results.json compares (a - b), in
  its order."""
  return tuple(models.comparisons(models.MODELS))


def display_name(model: str) -> str:
  """A model's name in sweep.md and the plots."""
  if model in models.MODELS:
    return models.MODELS[model].display
  return model


def comparison_name(key: str) -> str:
  """"audio_user_vs_audio" -> "audio + user - audio"."""
  a, _, b = key.partition("_vs_")
  return f"{display_name(a)} - {display_name(b)}"


def style(key: str) -> tuple[str, str | None]:
  """(matplotlib line format, colour) of a model or a comparison key: a
  comparison `<a>_vs_<b>` is drawn in a's style when b is the first model a
  is compared with (a's gain over the audio model keeps a's colour); a's
  other comparisons take the next colour of matplotlib's cycle."""
  a, _, b = key.partition("_vs_")
  if a not in models.MODELS:
    return _NO_STYLE
  model = models.MODELS[a]
  if b and (not model.compared_with or b != model.compared_with[0]):
    return _NO_STYLE
  return model.style
