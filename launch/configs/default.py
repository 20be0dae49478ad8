"""The embedded default: the paper's study on the simulated world, on a CPU.

Every key of every config is declared here; other configs import this one and
override. The model sections share one set of keys; a key a model does not
use (conv widths of the user-only model) is ignored by it.
"""

import ml_collections


def model_config(**overrides) -> ml_collections.ConfigDict:
  """One model's section: architecture, optimiser, schedule, stopping."""
  config = ml_collections.ConfigDict()
  config.conv_widths = (8, 16, 32, 64)  # filters of the 4 conv blocks
  config.hidden = 128  # width of the dense sigmoid layer before the output
  config.dropout_rate = 0.7  # the paper's keep probability 0.3
  config.user_widths = (128,)  # dense layers of the user branch
  config.deep = False  # audio_user: the later public version's deep branches
  config.optimizer = "adam"  # "adam" or "adadelta"
  config.learning_rate = 1e-3
  config.weight_decay = 0.0  # decoupled weight decay (adam only)
  config.decay_rate = 1.0  # staircase exponential decay factor ...
  config.decay_steps = 1000  # ... applied every this many steps
  config.batch_size = 32
  config.steps_per_epoch = 0  # 0: one pass over the training split
  config.max_epochs = 20
  config.patience = 4  # epochs without a better validation loss before stop
  config.device_data_budget_mb = 4096  # splits under it live on each device
  config.steps_per_dispatch = 32  # steps per call (lax.scan); 1: conv on CPU
  config.compute_dtype = "float32"  # or "bfloat16"; params stay float32
  config.cpu_fast_path = True  # on CPU: conv stack arranged for XLA:CPU
  # audio_user: "audio" starts its conv stack from the trained audio model's
  # best state (beyond the paper, which trains it from scratch); "": scratch.
  config.audio_init = ""
  config.update(overrides)
  return config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # fixes data order, initialisation and dropout
  config.dataset = "contextual_tags/simulated"  # contextual_tags/<config>
  # "key=value,..." settings of the dataset's source: the simulated world's
  # fields (ctxtag.sources.simulated.SimulationConfig) or a real source's
  # options (ctxtag.sources.zenodo.Options); a changed dataset gets a name of
  # its own.
  config.dataset_options = ""
  config.manual_dir = ""  # inputs of real-data sources (CSVs, audio)
  # How pairs are split: "" keeps the source's own ("given" for zenodo,
  # "random" for playlists, track draws for simulated); "random",
  # "cold_user" or "cold_track" re-split them, seeded by `seed`.
  config.split_strategy = ""
  config.split_fractions = (0.56, 0.16, 0.28)  # train/validation/test shares
  config.data_dir = ""  # TFDS data dir; "" keeps the dataset in <workdir>/data
  config.models = ("audio", "audio_user", "user")  # what reproduce trains
  config.eval_batch_size = 256  # batch of prediction and validation passes
  config.log_every_steps = 50  # progress line and TensorBoard step scalars
  # Sized for a 2-core CPU (~380 examples/s for the audio models): the audio
  # model passes over the 2,000 training tracks per epoch; the audio + user
  # model has 15,000 pairs, so its epochs are 150 steps (4,800 pairs), as the
  # paper too counts epochs in steps; the user-only model is cheap.
  config.audio = model_config(max_epochs=25, patience=5)
  config.audio_user = model_config(steps_per_epoch=150, max_epochs=8,
                                   patience=3, audio_init="audio")
  config.user = model_config(batch_size=128, max_epochs=10, patience=3)
  return config
