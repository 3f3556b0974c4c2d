"""Packaging for tropemix.

Pins are chosen to resolve together under apache-beam 2.77.0, which caps pyarrow
(<26) and protobuf (<7).  See README.md, "Versions", for why each pin is what it is.
"""

from pathlib import Path

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "apache-beam==2.77.0",
    "pyarrow>=18,<26",
    # Prebuilt wheel of the official fastText sources with numpy-2 fixes; same API.
    "fasttext-numpy2-wheel==0.9.2",
    "datasketch==2.0.0",
    "numpy>=1.26,<3",
    "pydantic>=2.7,<3",
    "PyYAML>=6,<7",
    "zstandard>=0.22",
    # report.html plots (Agg backend, PNG only).
    "matplotlib>=3.8,<4",
    # WARC/WET parsing (FastWARC) and HTML main-text extraction (resiliparse): native code,
    # an order of magnitude faster than the pure-Python alternatives on crawl-sized input.
    "fastwarc>=2.0.1,<3",
    "resiliparse>=2.0.1,<3",
    # Token units of the blend: Hugging Face tokenizers reading a user's tokenizer.json.
    "tokenizers>=0.20,<1",
    # Users' chat templates (tokenizer_config.json) for format: chat; nothing else pulls it in.
    "jinja2>=3.1,<4",
]

EXTRAS = {
    "gcp": [
        "apache-beam[gcp]==2.77.0",
        "google-cloud-storage>=2.16,<4",
    ],
    "test": [
        "apache-beam[gcp]==2.77.0",
        # The Dask cluster tests start a real scheduler and workers (pipelines/dask_runner.py).
        "apache-beam[dask]==2.77.0",
        "pytest>=8",
        "pytest-xdist>=3.5",
        "hypothesis>=6.100",
        # Union-find reference of the connected-components tests.
        "scipy>=1.9",
        "duckdb>=1.0",
        # Shards must load in Hugging Face datasets (the messages and trope_scores columns).
        "datasets>=3,<5",
        "gcp-storage-emulator>=2024.8.3",
    ],
    # Worker and client environment of a Dask cluster (`--runner=dask`, deploy/dask/README.md).
    "dask": ["apache-beam[dask]==2.77.0"],
    "dev": [
        "ruff==0.17.6",
        "mypy==2.4.1",
        "types-PyYAML",
        # Sampling profiler for benchmarks/scale.py --profile.
        "py-spy>=0.3,<1",
    ],
}

setup(
    name="tropemix",
    version="0.1.0",
    description="Beam pipeline that measures and rebalances AI-narrative tropes in LLM training mixes",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(
        include=[
            "pipelines",
            "pipelines.*",
            "transforms",
            "transforms.*",
            "schemas",
            "schemas.*",
            "training",
            "training.*",
        ]
    ),
    # lid.176.ftz ships inside the package so workers never download a model.
    package_data={
        "schemas": ["*.yaml"],
        "transforms.classify": ["resources/*.ftz", "resources/*.md"],
        "transforms.report": ["templates/*.html"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["tropemix=pipelines.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
    ],
)
