"""sha256 of every output a run publishes, to prove a refactor left the bytes alone.

Runs the demo mix, the flagship recipe (needs ``../shared/data``) and a one-source
config over a ``benchmarks/corpus.py`` corpus on the in-process runner, each into a
fixed directory (the manifest records absolute shard paths), and prints one JSON object: config -> relative path -> sha256 for
every shard, ledger, dead-letter and dedup-index file and the manifest.  The report
is left out on purpose: it holds wall-clock timings.  Compare two commits with::

    python benchmarks/fingerprint.py --corpus /tmp/tropemix-bench/corpus-10k > before.json
    git checkout OTHER && python benchmarks/fingerprint.py --corpus ... > after.json
    diff before.json after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.vs_datatrove import tropemix_config  # noqa: E402

OUTPUTS = ("shards", "ledger", "dead_letter", "dedup_index")


def output_hashes(out: Path) -> dict[str, str]:
    """sha256 by relative path of the run's published files, the report excepted.

    Args:
      out: the run's output directory.
    """
    files = [p for folder in OUTPUTS for p in sorted((out / folder).glob("*"))]
    files.append(out / "manifest.json")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _run(config: dict[str, Any], base: Path, out: Path, name: str) -> dict[str, str]:
    """Writes ``config`` beside ``base`` (so relative inputs resolve), runs it into ``out``."""
    config["output"] = {**config.get("output", {}), "path": str(out)}
    path = base / f".fingerprint-{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "run", str(path), "--overwrite"],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    finally:
        path.unlink()
    return output_hashes(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, help="a benchmarks/corpus.py corpus (e.g. 10k documents)")
    parser.add_argument("--skip-recipe", action="store_true", help="without ../shared/data")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tropemix-fingerprint",
        help="fixed output root: the manifest records absolute shard paths",
    )
    args = parser.parse_args()
    result: dict[str, dict[str, str]] = {}
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    examples = REPO / "examples"
    names = ["demo"] if args.skip_recipe else ["demo", "recipe"]
    for name in names:
        cfg = yaml.safe_load((examples / f"{name}.yaml").read_text())
        result[name] = _run(cfg, examples, work / name, name)
    if args.corpus:
        bench = argparse.Namespace(ngram=5, num_perm=128, threshold=0.8, seed=1, num_shards=4)
        cfg = tropemix_config(args.corpus.resolve(), work / "corpus", REPO / "models/tropes-v1.ftz", bench)
        result[args.corpus.name] = _run(cfg, work, work / "corpus", "corpus")
    shutil.rmtree(work, ignore_errors=True)
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
