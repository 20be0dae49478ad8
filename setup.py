"""Installs ctxtag: the library, its launchers and its TFDS builders."""

import setuptools

# The tests compare a Beam build with a plain one; pytest-xdist runs the
# fast loop on every core (README).
_TEST = ["pytest", "pytest-xdist", "scikit-learn", "apache-beam>=2.77"]

setuptools.setup(
    name="ctxtag",
    version="0.1.0",
    description="User-aware contextual music auto-tagging in JAX/Flax.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=[
        "ctxtag", "ctxtag.*", "launch", "launch.*", "tfds_builders",
        "tfds_builders.*"]),
    install_requires=[
        "absl-py",
        "array_record",
        "flax>=0.12.8",
        "grain>=0.2.18",  # host batches in worker processes (large splits)
        "importlib_resources",  # tfds needs it to build, but does not pull it in
        "jax>=0.10.2",
        "librosa>=0.11",
        "matplotlib",
        "ml-collections",
        "numpy",
        "optax",
        "orbax-checkpoint",
        "requests",  # launch.fetch_audio: the Deezer API and its previews
        "scikit-learn",  # user embeddings from listening data (randomized SVD)
        "scipy",  # Wilcoxon signed-rank tests of paired model comparisons
        "soundfile",
        "tensorboardX",
        "threadpoolctl",  # one BLAS thread per front-end worker process
        "tensorflow-datasets>=4.9.10",
    ],
    extras_require={
        # Builds on Apache Beam (DirectRunner here; Dataflow, Flink, Spark).
        "beam": ["apache-beam>=2.77"],
        "test": _TEST,
        # TensorFlow's side of TFDS, never needed at run time: tfds.load and
        # as_dataset (tf.data), the tfds CLI (build, convert_format; the CLI
        # imports mlcroissant) and TFDS's DatasetBuilderTestCase (with dill).
        "tfds-test": _TEST + ["tensorflow", "dill", "mlcroissant"],
    },
)
