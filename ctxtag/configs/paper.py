"""The paper's exact configuration, for accelerators.

646 x 96 input (30 s excerpts), conv widths 32-64-128-256, Adadelta with
staircase exponential decay (audio: lr 0.1, x0.95 every 1,000 steps; user
models: lr 0.3, x0.97 every 2,000 steps), batch 32, epochs of 3,125 steps,
patience 10 (audio) and 20 (user models). The paper's own data is not
public with audio, so the data is the simulated world rendered at 30 s.
"""

from ctxtag.configs import default


def get_config():
  config = default.get_config()
  config.dataset_options = "excerpt_seconds=30.0"
  config.eval_batch_size = 128
  config.log_every_steps = 200
  paper_model = dict(conv_widths=(32, 64, 128, 256), optimizer="adadelta",
                     weight_decay=0.0, batch_size=32, steps_per_epoch=3125,
                     max_epochs=200, dropout_rate=0.7)
  config.audio.update(paper_model, hidden=256, learning_rate=0.1,
                      decay_rate=0.95, decay_steps=1000, patience=10)
  # The paper's fusion (concatenation), trained from scratch.
  config.audio_user.update(audio_init="", user_init="", fusion="concat",
                           freeze_experts=False)
  for name in ("audio_user", "user"):
    config[name].update(paper_model, hidden=128, user_widths=(128,),
                        learning_rate=0.3, decay_rate=0.97, decay_steps=2000,
                        patience=20)
  return config
