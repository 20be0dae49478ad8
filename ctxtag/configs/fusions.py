"""The two fusions of audio and user in one run: the default run's late
fusion ("audio_user") beside the paper's concatenation ("audio_user_concat",
its conv stack from the trained audio model), trained on the same data and
compared paired on the same users (results' comparisons
`audio_user_concat_vs_audio_user`)."""

from ctxtag.configs import default


def get_config():
  config = default.get_config()
  config.models = ("audio", "user", "audio_user", "audio_user_concat")
  config.audio_user_concat = default.model_config(
      learning_rate=0.003, max_epochs=8, patience=2, audio_init="audio",
      fusion="concat")
  return config
