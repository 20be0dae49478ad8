"""Seconds-long runs for tests: the tiny dataset, tiny models, 2 epochs."""

from ctxtag.configs import default


def get_config():
  config = default.get_config()
  config.dataset = "contextual_tags/simulated_small"
  config.eval_batch_size = 32
  config.log_every_steps = 5
  for name in ("audio", "audio_user", "user"):
    config[name].update(conv_widths=(4, 4, 4, 4), hidden=16, user_widths=(16,),
                        batch_size=8, steps_per_epoch=0, max_epochs=2,
                        patience=2)
  # Tests train the audio + user model on its own too; the transfer from the
  # audio model has a test of its own.
  config.audio_user.update(audio_init="", user_init="",
                           freeze_experts=False)
  return config
