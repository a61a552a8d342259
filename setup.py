"""Install recgpt-tf: `pip install .` (add `[test]` for the test suite)."""

from setuptools import find_packages, setup

# The stack is pinned as a set: ScaNN 1.4.x ships TF ops built against TF 2.20,
# and TFRS 0.7.7 needs Keras 2 (tf-keras), which must match TF's minor version.
INSTALL_REQUIRES = [
    "tensorflow==2.20.*",
    "tf-keras==2.20.*",
    "tensorflow-recommenders==0.7.7",
    "scann[tf]==1.4.2",
    "tensorflow-serving-api==2.20.*",
    "numpy>=2.0,<3",
    "grpcio>=1.60",
    "pyarrow>=14",  # Parquet interaction logs
]

# Apache Beam runs the data path (recgpt convert) and batch recommendations beyond one machine, as TFX runs
# its own steps; its [tfrecord] extra brings the CRC its TFRecord sink needs.
BEAM = ["apache-beam[tfrecord]==2.77.*"]

EXTRAS_REQUIRE = {
    "beam": BEAM,
    "test": [
        *BEAM,  # the Beam pipelines are tested on the DirectRunner
        "pytest>=8",
        "pytest-xdist>=3.5",  # the suite runs its files in parallel (pytest.ini)
        "hypothesis>=6.100",
        "ruff==0.17.6",
        "pyyaml>=6",
        "nbclient>=0.10",
        "nbformat>=5.9",
        "ipykernel>=6",
        "matplotlib>=3.8",
    ],
    "notebooks": ["nbclient>=0.10", "ipykernel>=6", "matplotlib>=3.8"],
}

setup(
    name="recgpt-tf",
    version="0.1.0",
    description=("RecGPT (generative personalised prompts for sequential recommendation) on TensorFlow, TFRS and TF Serving"),
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["recgpt_tf", "recgpt_tf.*"]),  # every subpackage, the lab's included
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["recgpt=recgpt_tf.cli:main"]},
)
