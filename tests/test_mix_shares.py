"""Token shares on real data: Wikipedia + the constitution + synthetic stories.

The "Done when" check of the blend: configured token shares are hit within 0.1
percentage point, with a real BPE ``tokenizer.json``, and every shard holds each
source's tokens within one document of its quota.
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from pipelines.run import run
from schemas.loading import parse_config

from .conftest import FN_API_RUNNER, REPO

# Enough Wikipedia that half the largest constitution section (the most a share can
# miss by) is under 0.1 point of the mix.
WIKI_PAGES = 2000
SHARES = {"wikipedia": 0.94, "stories": 0.05, "constitution": 0.01}


@pytest.fixture(scope="module")
def token_mix(
    shared_data: Path, bpe_tokenizer: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("token-mix")
    wiki = tmp / "wiki.jsonl"
    with gzip.open(shared_data / "wikipedia" / "pages-00.jsonl.gz", "rt", encoding="utf-8") as f:
        wiki.write_text("".join(itertools.islice(f, WIKI_PAGES)), encoding="utf-8")
    cfg = parse_config(
        {
            "run_name": "token-mix",
            "sources": [
                {"name": "wikipedia", "inputs": [str(wiki)], "classify": False, "dedup": False},
                {
                    "name": "stories",
                    "role": "synthetic_story",
                    "inputs": [str(REPO / "examples" / "demo" / "stories" / "*.jsonl")],
                    "fields": {"metadata": ["title", "tropes"]},
                    "tropes_field": "tropes",
                },
                {
                    "name": "constitution",
                    "role": "constitution",
                    "inputs": [str(shared_data / "constitution" / "*.md")],
                    "format": "text",
                    "classify": False,
                },
            ],
            "classifier": {"model": str(REPO / "models" / "tropes-v1.ftz")},
            "blend": {
                "unit": "tokens",
                "tokenizer": bpe_tokenizer,
                "sources": {
                    "wikipedia": {"share": SHARES["wikipedia"]},
                    "stories": {"share": SHARES["stories"], "max_epochs": 200},
                    "constitution": {"share": SHARES["constitution"], "max_epochs": 200},
                },
                "num_shards": 4,
                "seed": 11,
            },
            "output": {"path": str(tmp / "out")},
        }
    )
    report = run(cfg, [f"--runner={FN_API_RUNNER}"])
    return tmp / "out", report


@pytest.mark.slow
def test_token_shares_within_a_tenth_of_a_point(
    token_mix: tuple[Path, dict[str, Any]], bpe_tokenizer: str
) -> None:
    out, report = token_mix
    assert report["conservation"]["ok"]
    manifest = json.loads((out / "manifest.json").read_text())
    plan = manifest["plan"]
    assert plan["unit"] == "tokens"
    tokenizer = Tokenizer.from_file(bpe_tokenizer)
    # Recount tokens with the tokenizer itself: every row of the first shard, and every
    # story and constitution row (Wikipedia's other rows are too many to re-encode in a test).
    realized = dict.fromkeys(SHARES, 0)
    largest = dict.fromkeys(SHARES, 0)
    per_shard: dict[str, list[int]] = {name: [] for name in SHARES}
    for i, shard in enumerate(manifest["shards"]):
        rows = pq.read_table(shard["path"], columns=["source", "text"]).to_pylist()
        recount = [r for r in rows if i == 0 or r["source"] != "wikipedia"]
        counts = [
            len(e.ids) for e in tokenizer.encode_batch([r["text"] for r in recount], add_special_tokens=False)
        ]
        got = dict.fromkeys(SHARES, 0)
        for r, n in zip(recount, counts, strict=True):
            got[r["source"]] += n
            largest[r["source"]] = max(largest[r["source"]], n)
        if i > 0:
            got["wikipedia"] = shard["units_by_source"]["wikipedia"]
        assert got == shard["units_by_source"]
        for name in SHARES:
            per_shard[name].append(got[name])
            realized[name] += got[name]
    total = sum(realized.values())
    for name, share in SHARES.items():
        assert abs(realized[name] / total - share) < 0.001, (name, realized[name] / total, share)
        assert report["realized"][name]["realized"] == realized[name]
        # Every shard holds the source's tokens within one document of an equal split.
        quota = realized[name] / plan["num_shards"]
        assert all(abs(n - quota) <= largest[name] for n in per_shard[name]), (name, per_shard[name], quota)
        assert report["realized"][name]["per_shard"] == per_shard[name]
