"""Run configuration: one pydantic model per stage, loaded from YAML.

Every model forbids unknown keys, so a typo such as ``thresold`` fails validation
instead of silently falling back to a default.  ``schemas/loading.py:load_config``
turns pydantic's errors into ``ConfigError`` messages that name the field path and the fix.

Runner flags (``--runner``, ``--project``, ``--direct_num_workers`` ...) are not part
of this config: they stay in Beam ``PipelineOptions``.

One module over 500 lines on purpose: it is the schema of one YAML file, its
sections in the file's order with their validators beside them, so a reader checks
a key and its rules in one place; there is no logic here to split by job.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

NARRATIVES = ("misaligned", "aligned", "mixed", "ai_nonnarrative", "none")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names each bad field."""


_NUMBERS = (int, float, int | None, float | None)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML's true/false would otherwise pass as 1/0 (``num_shards: true`` -> 1 shard).
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and field.annotation in _NUMBERS:
            raise ValueError(f"{str(value).lower()} is a boolean; give a number")
        return value


class Role(str, Enum):
    WEB = "web"
    SYNTHETIC_STORY = "synthetic_story"
    CONSTITUTION = "constitution"
    # Chat conversations of principled advice on hard situations (``format: chat``).
    ADVICE = "advice"
    OTHER = "other"


# Curated material outranks scraped text when dedup has to pick a survivor.
DEFAULT_ROLE_PRIORITY = {
    Role.CONSTITUTION: 0,
    Role.SYNTHETIC_STORY: 1,
    Role.ADVICE: 1,
    Role.OTHER: 2,
    Role.WEB: 3,
}


class FieldMapping(_Strict):
    """Which input fields hold the id, the text and the metadata to keep."""

    id: str = "id"
    text: str = "text"
    metadata: list[str] = Field(default_factory=list)


class ChatConfig(_Strict):
    """How a ``format: chat`` source's conversations become text for the stages.

    Args:
      messages_field: record field holding the list of ``{role, content}`` messages.
      template: Jinja chat template that renders the conversation for classification,
        dedup and token counts: a ``tokenizer_config.json`` (its ``chat_template``) or a
        template file, local or ``gs://``.  None renders plain ``role: content`` turns.
    """

    messages_field: str = "messages"
    template: str | None = None


class SourceConfig(_Strict):
    """One named input of the mix.

    Args:
      name: stable name; appears in ids, shards, the manifest and the ledger.
      role: what the source is; decides the default dedup priority.
      inputs: file globs, local or ``gs://``.
      format: ``jsonl`` (plain, ``.gz`` or ``.zst``), ``parquet``, ``warc`` (HTML ``response``
        records, main text extracted), ``wet`` (plain-text ``conversion`` records) or
        ``text`` (one document per file) or ``chat`` (JSONL records holding a list of
        ``{role, content}`` messages, plain, ``.gz`` or ``.zst``).
      chat: rendering of ``chat`` records; defaults to plain role-prefixed turns.
      classify: run the trope classifier on it.
      dedup: take part in exact and near-duplicate removal.
      narrative: narrative assigned when ``classify`` is false.
      priority: dedup survivor priority, lower wins; defaults from ``role``.
      incremental: in incremental runs read only files earlier runs did not consume;
        false for curated sources (constitution, stories) that every run reads whole.
      tropes_field: metadata field holding the document's trope tags (e.g. ``tropes`` of
        synthetic stories); when set, the source is not classified and its tropes and
        narrative come from these tags.
      duplicate_ids: what to do when records of this source share an id: ``error`` (fail,
        naming the id and where it occurs), ``rekey`` (ids from file and offset) or
        ``keep-first`` (the rest go to the ledger as ``duplicate_id``).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    role: Role = Role.WEB
    inputs: list[str] = Field(min_length=1)
    format: Literal["jsonl", "parquet", "text", "warc", "wet", "chat"] = "jsonl"
    fields: FieldMapping = Field(default_factory=FieldMapping)
    chat: ChatConfig | None = None
    classify: bool = True
    dedup: bool = True
    narrative: Literal["misaligned", "aligned", "mixed", "ai_nonnarrative", "none"] = "none"
    priority: int | None = Field(default=None, ge=0)
    incremental: bool = True
    tropes_field: str | None = None
    duplicate_ids: Literal["error", "rekey", "keep-first"] = "error"

    @model_validator(mode="after")
    def _tropes_field_is_kept(self) -> SourceConfig:
        if self.tropes_field is not None and self.tropes_field not in self.fields.metadata:
            raise ValueError(f"tropes_field {self.tropes_field!r} is not kept; add it to fields.metadata")
        if self.chat is not None and self.format != "chat":
            raise ValueError(f"'chat' only applies to format 'chat', not {self.format!r}; remove it")
        return self

    @property
    def dedup_priority(self) -> int:
        return self.priority if self.priority is not None else DEFAULT_ROLE_PRIORITY[self.role]


class ReadConfig(_Strict):
    """Limits applied while parsing input records.

    Args:
      max_doc_bytes: documents longer than this (UTF-8 bytes) are truncated or dead-lettered.
      oversize: what to do with an oversize document.
      split_bytes: uncompressed JSONL files are read in byte ranges of this size, spread
        over workers; compressed files are read whole, one worker each.
      max_line_bytes: a JSONL line (or a ``text`` file) longer than this is dead-lettered
        without being held in memory; it bounds a worker's memory on a file with a
        missing newline.
    """

    max_doc_bytes: int = Field(default=2_000_000, gt=0)
    oversize: Literal["truncate", "dead_letter"] = "truncate"
    split_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_line_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)


class PolicyRule(_Strict):
    """What happens to documents of one narrative.

    Args:
      action: ``keep``, ``drop``, ``downsample`` (keep ``rate`` of them) or ``tag`` (scores only).
      rate: kept fraction for ``downsample``; chosen by a hash of the id and the seed.
    """

    action: Literal["keep", "drop", "downsample", "tag"] = "keep"
    rate: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _rate_matches_action(self) -> PolicyRule:
        if self.action == "downsample" and self.rate is None:
            raise ValueError("action 'downsample' needs a 'rate' between 0 and 1")
        if self.action != "downsample" and self.rate is not None:
            raise ValueError(f"'rate' only applies to action 'downsample', not {self.action!r}")
        return self


class ClassifierConfig(_Strict):
    """The trope classifier stage.

    Args:
      model: fastText model path (local or ``gs://``).
      thresholds: per-label probability thresholds overriding the model card's;
        ``default`` covers labels neither lists.
      policy: action per narrative.
      label_policy: action per label of the taxonomy, applied to documents where the
        label fired; a drop by either policy drops the document, and each downsample
        keeps by its own hash.
      taxonomy: taxonomy YAML (local or ``gs://``); defaults to the model card's, else
        the shipped ``schemas/taxonomy.yaml``.
      batch_size: documents per ``predict`` call.
      languages: lid.176 language codes the trope model applies to; documents in
        other languages are ``none`` (counted as ``route.language``), never a guess.
      min_language_score: a document whose language probability is below this counts
        as another language.
      lid_model: language-identification model; the lid.176 model shipped in the package.
      seed: seed for ``downsample`` policies.
      allow_unverified_model: use a remote model whose card gives no sha256
        (``--allow-unverified-model``); otherwise such a model is refused.
    """

    model: str
    thresholds: dict[str, float] = Field(default_factory=dict)
    policy: dict[str, PolicyRule] = Field(default_factory=dict)
    label_policy: dict[str, PolicyRule] = Field(default_factory=dict)
    taxonomy: str | None = None
    batch_size: int = Field(default=256, gt=0)
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    min_language_score: float = Field(default=0.0, ge=0.0, le=1.0)
    lid_model: str | None = None
    seed: int = 0
    allow_unverified_model: bool = False

    @field_validator("thresholds")
    @classmethod
    def _thresholds_are_probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        for label, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold for {label!r} is {threshold}; use a probability in [0, 1]")
        return value

    @field_validator("policy")
    @classmethod
    def _policy_keys_are_narratives(cls, value: dict[str, PolicyRule]) -> dict[str, PolicyRule]:
        unknown = sorted(set(value) - set(NARRATIVES))
        if unknown:
            raise ValueError(f"unknown narrative(s) {unknown}; use one of {list(NARRATIVES)}")
        return value

    def rule(self, narrative: str) -> PolicyRule:
        return self.policy.get(narrative, PolicyRule())


class SurvivorConfig(_Strict):
    """How dedup picks the one document of a cluster that survives.

    Candidates compare key by key in ``order``; the smallest stable id breaks the
    remaining ties, so the choice never depends on input order or workers.

    Args:
      order: ``priority`` (the source's, lower wins), ``score`` (higher wins),
        ``length`` (longer text wins), in the order they apply.
      score_field: dotted path of the numeric score, e.g. ``meta.quality`` or
        ``trope_scores.ethical_reasoning``; a missing or non-numeric value counts as 0.
    """

    order: list[Literal["priority", "score", "length"]] = Field(
        default_factory=lambda: ["priority", "score"]  # type: ignore[arg-type]
    )
    score_field: str = Field(default="meta.quality", pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")

    @field_validator("order")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a key twice; list each of priority, score, length at most once")
        return value


class DedupConfig(_Strict):
    """Exact and MinHash-LSH near-duplicate removal.

    Args:
      ngram: word n-gram size of the shingles.
      num_perm: MinHash permutations.
      threshold: Jaccard similarity above which two documents are duplicates.
      seed: MinHash permutation seed.
      minhash: ``fast``: one-permutation MinHash with densification, one hash per
        shingle; ``datasketch``: ``num_perm`` permutations whose signatures equal
        ``datasketch.MinHash(seed=seed, scheme=f"affine{bits}")`` bit for bit, fed the
        same shingle hashes (about 10x slower).
      bits: MinHash value width, 32 or 64.
      max_rounds: large-star / small-star rounds unrolled for the near-duplicate
        clusters (``transforms/blocks.py``), each two shuffles.  Rounds grow with
        log n, not with a cluster's diameter: a chain of 10,000 near duplicates
        needs 11 to 15, of 100,000 14 to 18.  Clusters that need more fail the job
        with the count of unsettled nodes; no lineage is written from them.
      bucket_salts: within an LSH bucket, members link to the minimum of their
        salted group, and group minimums to the bucket's, so the minimum of a
        bucket shared by 100,000 boilerplate pages gets about this many neighbours.
      partitions: exact groups and LSH band members are shuffled as lists, one per
        partition of the hash space and bundle; a worker holds about bands x
        documents / partitions keys at a time.  Raise it with the corpus (65,536
        for a billion documents).
      verify_threshold: when set, a candidate pair is only linked if the Jaccard
        similarity estimated from the two signatures reaches it.
      survivor: which document of a cluster survives.
      previous_index: globs of ``dedup_index/`` Parquet files of earlier runs; a
        document colliding with one of their survivors is dropped.
      write_index: write this run's survivors' index to ``<output>/dedup_index/``.
      index_shards: number of index files.
    """

    ngram: int = Field(default=5, ge=1, le=32)
    num_perm: int = Field(default=128, ge=16, le=1024)
    threshold: float = Field(default=0.8, gt=0.0, lt=1.0)
    seed: int = Field(default=1, ge=0, lt=2**32)
    minhash: Literal["fast", "datasketch"] = "fast"
    bits: Literal[32, 64] = 32
    max_rounds: int = Field(default=16, ge=1, le=64)
    bucket_salts: int = Field(default=16, ge=1, le=4096)
    partitions: int = Field(default=1024, ge=1, le=1 << 20)
    verify_threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    survivor: SurvivorConfig = Field(default_factory=SurvivorConfig)
    previous_index: list[str] = Field(default_factory=list)
    write_index: bool = True
    index_shards: int = Field(default=1, ge=1, le=10_000)


class BlendSource(_Strict):
    """Target of one source in the mix: a ``share`` of the total, or an absolute ``target``.

    Args:
      share: fraction of the mix's units that come from this source; with budgets on
        other sources, the fraction of what the budgets leave.
      target: absolute units (a budget such as 3,000,000 tokens) of this source.
      max_epochs: how many times a document may be repeated to reach the target.
      chat_tokens: for a ``chat`` source with unit ``tokens``: count the whole rendered
        ``conversation`` or only its ``assistant`` turns (where a trainer's loss usually goes).
    """

    share: float | None = Field(default=None, ge=0.0, le=1.0)
    target: int | None = Field(default=None, ge=0)
    max_epochs: int = Field(default=1, ge=1, le=1000)
    chat_tokens: Literal["conversation", "assistant"] = "conversation"

    @model_validator(mode="after")
    def _share_or_target(self) -> BlendSource:
        if (self.share is None) == (self.target is None):
            raise ValueError("give exactly one of 'share' (fraction of the total) or 'target' (units)")
        return self


class NarrativeBalance(_Strict):
    """Minimum aligned share among the mix's aligned and misaligned documents.

    Args:
      min_aligned_share: aligned units / (aligned + misaligned units) must reach this.
      strategy: ``add_stories`` raises the aligned units of ``synthetic_story`` sources
        (within their ``max_epochs``); ``downsample_misaligned`` takes fewer misaligned
        units from ``web`` sources, refilling with their other documents; ``both`` adds
        stories first, then downsamples.
      match_tropes: spread story units over the misaligned tropes found in web text, in
        proportion to their units, using stories that counter each trope.
      counters: misaligned trope -> aligned tags that counter it; defaults to
        ``schemas/taxonomy.py:DEFAULT_COUNTERS``.  A story tagged with a misaligned trope
        itself counters that trope too.
    """

    min_aligned_share: float = Field(gt=0.0, lt=1.0)
    strategy: Literal["add_stories", "downsample_misaligned", "both"] = "add_stories"
    match_tropes: bool = False
    counters: dict[str, list[str]] | None = None


class BlendConfig(_Strict):
    """How sources are mixed into shards.

    Args:
      unit: what shares and targets count: ``documents``, UTF-8 ``bytes`` or ``tokens``.
      tokenizer: Hugging Face ``tokenizer.json`` (local or ``gs://``) for ``tokens``; without
        one, tokens are the built-in estimate ``transforms/blend/units.py:estimate_tokens``.
      total: total units of the mix; when absent, the largest total that no source's
        ``available * max_epochs`` limits.  Only with shares; budgets count towards it.
      sources: share (the shares summing to 1) or absolute target (a budget), and epoch
        cap, per source name; budgets and shares may be mixed (``transforms/budget.py``).
      num_shards: output shard count.
      shard_size: target units per shard instead of ``num_shards``; the plan sets the
        shard count to ``ceil(total / shard_size)``.
      seed: seed of sampling and shuffling.
      narrative_balance: optional minimum aligned share and how to reach it.
      min_source_fraction: with shares and no ``total``, fail when a source's plan takes
        less than this fraction of its available units: another, scarce source (often a
        broken one) then limits the total.  0 turns the check off.
      allow_empty_sources: let a source bring no documents (an incremental run without
        new files); the others share the mix.  Otherwise an empty source fails the plan.
    """

    unit: Literal["documents", "bytes", "tokens"] = "documents"
    tokenizer: str | None = None
    total: int | None = Field(default=None, gt=0)
    sources: dict[str, BlendSource]
    num_shards: int = Field(default=4, ge=1, le=100_000)
    shard_size: int | None = Field(default=None, gt=0)
    seed: int = 0
    narrative_balance: NarrativeBalance | None = None
    min_source_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    allow_empty_sources: bool = False

    @field_validator("sources")
    @classmethod
    def _shares_sum_to_one(cls, value: dict[str, BlendSource]) -> dict[str, BlendSource]:
        if not value:
            raise ValueError("list at least one source with a share")
        # Shares may sit beside budgets: they then split what the budgets leave.
        with_share = [s.share for s in value.values() if s.share is not None]
        if with_share:
            total = sum(with_share)
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"shares sum to {total:.6g}; make them sum to 1")
        return value

    @model_validator(mode="after")
    def _total_needs_shares(self) -> BlendConfig:
        if self.total is not None and not any(s.share is not None for s in self.sources.values()):
            raise ValueError("'total' only applies with shares; with absolute targets only, remove it")
        if self.shard_size is not None and "num_shards" in self.model_fields_set:
            raise ValueError("give 'num_shards' or 'shard_size' (units per shard), not both")
        if self.tokenizer is not None and self.unit != "tokens":
            raise ValueError(f"'tokenizer' only applies to unit 'tokens', not {self.unit!r}")
        return self

    @property
    def uses_shares(self) -> bool:
        return all(s.share is not None for s in self.sources.values())


class OutputConfig(_Strict):
    """Where a run writes.

    Args:
      path: run directory (local or ``gs://``): shards/, ledger/, dead_letter/, manifest.json, report.json.
      shard_prefix: file name prefix of the shards.
      ledger_shards: number of ledger files.
      row_group_size: Parquet row group size of the shards.
      incremental: treat ``path`` as the root of scheduled incremental runs
        (state/inputs.json plus runs/<run_id>/); see pipelines/incremental.py.
      format: shard file format: ``parquet`` (``SHARD_SCHEMA``, zstd) or ``jsonl.zst``.
      report_excerpts: sampled excerpts per narrative of classified documents shown in
        report.json and report.html, so a user can check the labels by reading (0: none).
    """

    path: str
    shard_prefix: str = Field(default="mix", pattern=r"^[A-Za-z0-9_\-]+$")
    ledger_shards: int = Field(default=1, ge=1, le=10_000)
    row_group_size: int = Field(default=10_000, ge=100)
    incremental: bool = False
    format: Literal["parquet", "jsonl.zst"] = "parquet"
    report_excerpts: int = Field(default=0, ge=0, le=50)


class EvalSet(_Strict):
    """One evaluation file (or glob) whose records must stay out of the mix.

    Args:
      path: file glob, local or ``gs://``; plain, ``.gz`` or ``.zst``.
      format: ``jsonl`` (one record per line, text in ``text_field``), ``text`` (each
        file one record) or ``chat`` (JSONL records with a ``messages`` list; every
        message's content counts).
      text_field: JSONL field holding the text.
      id_field: JSONL field holding the record id; the line number when absent.
    """

    path: str
    format: Literal["jsonl", "text", "chat"] = "jsonl"
    text_field: str = "text"
    id_field: str = "id"


class DecontaminateConfig(_Strict):
    """Drops training documents that share long word n-grams with evaluation records.

    Args:
      evals: evaluation files.
      ngram: words per n-gram (13 as in the GPT-3 and OLMo reports).
      threshold: a document is contaminated by an eval record when it holds at least
        this fraction of the record's distinct n-grams (and at least one).
      sources: source names to check; all sources when empty.
      batch_size: documents per batch.
    """

    evals: list[EvalSet] = Field(min_length=1)
    ngram: int = Field(default=13, ge=4, le=64)
    threshold: float = Field(default=0.1, gt=0.0, le=1.0)
    sources: list[str] = Field(default_factory=list)
    batch_size: int = Field(default=256, gt=0)


class MixConfig(_Strict):
    """A whole tropemix run."""

    run_name: str = "tropemix"
    sources: list[SourceConfig] = Field(min_length=1)
    read: ReadConfig = Field(default_factory=ReadConfig)
    classifier: ClassifierConfig
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontaminate: DecontaminateConfig | None = None
    blend: BlendConfig
    output: OutputConfig

    @model_validator(mode="after")
    def _names_line_up(self) -> MixConfig:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; {dupes} repeat")
        missing = sorted(set(names) - set(self.blend.sources))
        unknown = sorted(set(self.blend.sources) - set(names))
        if unknown:
            raise ValueError(f"blend.sources names {unknown}, which are not in sources {names}")
        if missing:
            raise ValueError(
                f"blend.sources has no share for {missing}; give each source a share (0 is allowed)"
            )
        formats = {s.name: s.format for s in self.sources}
        not_chat = sorted(
            n for n, b in self.blend.sources.items() if b.chat_tokens == "assistant" and formats[n] != "chat"
        )
        if not_chat:
            raise ValueError(
                f"blend.sources {not_chat}: chat_tokens 'assistant' needs a format 'chat' source"
            )
        if self.decontaminate is not None:
            stray = sorted(set(self.decontaminate.sources) - set(names))
            if stray:
                raise ValueError(f"decontaminate.sources names {stray}, which are not in sources {names}")
        return self

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)
