"""The embedded default: the paper's study on the simulated world, on a CPU.

Every key of every config is declared here; other configs import this one and
override. The model sections share one set of keys; a key a model does not
use (conv widths of the user-only model) is ignored by it.
"""

import ml_collections

from ctxtag import models
from ctxtag import steps
from ctxtag import study
from ctxtag.configs import checks
from ctxtag.sources import splits


def model_config(**overrides) -> ml_collections.ConfigDict:
  """One model's section: architecture, optimiser, schedule, stopping."""
  config = ml_collections.ConfigDict()
  config.conv_widths = (8, 16, 32, 64)  # filters of the 4 conv blocks
  config.hidden = 128  # width of the dense sigmoid layer before the output
  config.dropout_rate = 0.7  # the paper's keep probability 0.3
  config.user_widths = (128,)  # dense layers of the user branch
  # fusion "concat": the later public version's deeper branches.
  config.deep = False
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
  # The conv stack arranged for speed: on CPU pooling, first layer and
  # weight gradients; on GPU/TPU the pooling only (ctxtag.models).
  config.cpu_fast_path = True
  # Splits over device_data_budget_mb are batched on the host by this many
  # worker processes (-1: half the cores less one, at most 8; 0: in the
  # training process), each holding host_prefetch batches ready.
  config.host_workers = -1
  config.host_prefetch = 4
  # Checkpoints within an epoch (0: off), besides the one at each epoch end;
  # a kill loses at most the work since the last. By time, so that the bound
  # holds on any machine: the paper config's epochs take ~3 h on a 2-core
  # CPU (~9 ex/s in python -m benchmarks.train_step), ~2 min on an H100
  # (benchmarks/README.md); the default config's take seconds and
  # checkpoint at their ends first. Saves run in the background.
  config.checkpoint_every_steps = 0  # at the first dispatch past each multiple
  config.checkpoint_every_seconds = 300.0  # since the last checkpoint
  # A model that reads audio and users: the name of a trained audio tagger
  # (an entry with "tracks" batches, trained before it in `models`) to start
  # its audio part from (beyond the paper, which trains it from scratch);
  # "": scratch.
  config.audio_init = ""
  # The same for its user part, from a trained user-only model (fusion
  # "late" only); "": scratch.
  config.user_init = ""
  # "concat" (the paper: audio features and user branch concatenated before
  # one head) or "late" (beyond the paper: a weighted product of an audio
  # tagger and a user-only tagger; see ctxtag.models.LateFusionTagger).
  config.fusion = "concat"
  # fusion "late": keep both experts as audio_init and user_init gave them
  # (the trained models); only their three weights are fitted, exactly, on
  # the validation split (pairs the experts never saw): the optimiser,
  # epoch and stopping settings then do not apply (ctxtag.fusion_fit).
  config.freeze_experts = False
  config.update(overrides)
  return config


# Each model key's check, in model_config's order. Choices come from the
# tables that define them.
MODEL_CHECKS = {
    "conv_widths": checks.widths,
    "hidden": checks.POSITIVE,
    "dropout_rate": checks.number(0, 1, False, True),
    "user_widths": checks.widths,
    "deep": checks.boolean,
    "optimizer": checks.one_of(steps.OPTIMIZERS),
    "learning_rate": checks.FINITE_POSITIVE,
    "weight_decay": checks.NON_NEGATIVE,
    # (0, 1]: 1 is a constant rate; above 1 the rate would grow.
    "decay_rate": checks.number(0, 1, True, False),
    "decay_steps": checks.POSITIVE,
    "batch_size": checks.POSITIVE,
    "steps_per_epoch": checks.integer(0),  # 0: one pass over the split
    "max_epochs": checks.POSITIVE,
    # >= 1: with 0 the loop would stop before its first epoch.
    "patience": checks.POSITIVE,
    "device_data_budget_mb": checks.NON_NEGATIVE,  # 0: every split on host
    "steps_per_dispatch": checks.POSITIVE,
    "compute_dtype": checks.one_of(("float32", "bfloat16")),
    "cpu_fast_path": checks.boolean,
    "host_workers": checks.integer(-1),
    "host_prefetch": checks.POSITIVE,
    "checkpoint_every_steps": checks.integer(0),
    "checkpoint_every_seconds": checks.NON_NEGATIVE,
    # "" or a trained model of the kind (checked against the run's models).
    "audio_init": checks.text,
    "user_init": checks.text,
    "fusion": checks.one_of(("concat", "late")),
    "freeze_experts": checks.boolean,
}


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
  # What reproduce trains, in order (the late fusion starts from the others):
  # entries of the model table (ctxtag.models.MODELS), each with a section
  # of its own below (a variant of a kind is a new entry and section: see
  # ctxtag/configs/fusions.py).
  config.models = ("audio", "user", "audio_user")
  config.eval_batch_size = 256  # batch of prediction and validation passes
  config.log_every_steps = 50  # progress line and TensorBoard step scalars
  # MO-MG's ground truth: each track's contexts over the evaluated split's
  # pairs ("test"), or over its pairs in every split ("all_splits": the
  # authors' pipeline, for like-for-like comparison with the paper's table).
  config.mo_mg_truth = "test"
  # Sized for a 2-core CPU (the whole reproduction, build included, in about
  # a minute: python -m benchmarks.reproduce_stages, benchmarks/README.md):
  # the audio model passes over the 2,000 training tracks per epoch, with a
  # learning rate halved every 2 epochs; the user-only model
  # (15,000 pairs, batch 128) is best after an epoch or two; the audio +
  # user model fits only the three weights of its product of the trained
  # audio and user-only models, exactly, on the validation split's 4,500
  # pairs, which neither model has seen (ctxtag.train.split_fitted_on).
  config.audio = model_config(learning_rate=0.003, decay_rate=0.5,
                              decay_steps=124, max_epochs=8, patience=2)
  config.audio_user = model_config(audio_init="audio", user_init="user",
                                   fusion="late", freeze_experts=True)
  config.user = model_config(batch_size=128, max_epochs=6, patience=2)
  return config


# Each top-level key's check, in get_config's order; `dataset` is checked
# against the builder's configs (ctxtag.run_config) and the model sections
# with MODEL_CHECKS.
CHECKS = {
    "seed": checks.integer(0),  # numpy's generators refuse negative seeds
    "dataset_options": checks.text,
    "manual_dir": checks.text,
    "split_strategy": checks.one_of(("", *splits.STRATEGIES, "given")),
    "split_fractions": checks.fractions,
    "data_dir": checks.text,
    "models": checks.names_from(models.trained_models),
    "eval_batch_size": checks.POSITIVE,
    "log_every_steps": checks.POSITIVE,
    "mo_mg_truth": checks.one_of(study.MO_MG_TRUTHS),
}
