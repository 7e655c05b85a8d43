"""Typed configuration of a LoRA fine-tune run (``ragstream finetune``) and its promotion gate.

The fields are the seed's (rank, alpha, dropout, learning rate, epochs, batch, max sequence length) plus what the
training-set builder and the evaluation gate need. Defaults are sized for the small chat model on a 2-core CPU
(issue 19: a run completes in <= 20 minutes). :meth:`FinetuneConfig.validate` says what is wrong with a config
before anything trains; :meth:`FinetuneConfig.digest` identifies it in the adapter's identity.

Identity of an adapter (:class:`schemas.events.AdapterRef`) and the events of a run (``finetune.*``) live in
:mod:`schemas.events` beside the other event types.
"""

from __future__ import annotations

import hashlib

import msgspec

DEFAULT_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


class GateThresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an adapter must do on the held-out split, against the base model measured in the same run, to be
    promoted. Margins are absolute differences of rates in [0, 1]."""

    # correctness (key facts stated, or answer overlap where a case has none) must rise by at least this much
    min_correctness_gain: float = 0.0
    # share of answerable cases answered with at least one valid [n] citation must rise by at least this much
    min_citation_gain: float = 0.0
    # share of answerable cases refused may rise by at most this much (0: no more false refusals than the base)
    max_false_refusal_increase: float = 0.0
    # share of answers citing a number with no source behind it may rise by at most this much
    max_invalid_citation_increase: float = 0.0
    # at least one of correctness and citation rate must strictly improve (a tie on both is not "better")
    require_strict_gain: bool = True
    # too few held-out cases make every difference noise: refuse to promote below this
    min_heldout_cases: int = 10


class FinetuneConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One fine-tune run's settings (JSON/TOML-able; unknown fields are an error so a typo cannot pass silently)."""

    base_model: str = "llm_small"  # the Triton chat model the adapter is for (SmolLM2-135M-Instruct)
    # LoRA
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    # optimisation
    learning_rate: float = 2e-4
    epochs: int = 1
    batch_size: int = 4
    max_seq_len: int = 768  # prompt + answer tokens; longer examples are cut from the left of the sources
    max_steps: int = 0  # > 0: stop after this many optimizer steps (tiny runs, tests)
    seed: int = 0
    # training set
    holdout_percent: int = 20  # share of golden cases and chunks (by hash) that only ever evaluate
    generated_per_chunk: int = 1  # questions generated from each chunk
    refusal_share: float = 0.2  # share of examples whose sources do not hold the answer (target: the refusal)
    sources_per_example: int = 3  # the answer's source plus distractors
    max_examples: int = 400
    # evaluation
    eval_max_new_tokens: int = 96
    max_eval_cases: int = 60
    gate: GateThresholds = msgspec.field(default_factory=GateThresholds)

    def validate(self) -> FinetuneConfig:
        """``self``, or :class:`ValueError` naming every field out of range."""
        problems: list[str] = []
        if self.rank < 1:
            problems.append("rank must be >= 1")
        if self.alpha < 1:
            problems.append("alpha must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must be in [0, 1)")
        if not 0.0 < self.learning_rate < 1.0:
            problems.append("learning_rate must be in (0, 1)")
        if self.epochs < 1:
            problems.append("epochs must be >= 1")
        if self.batch_size < 1:
            problems.append("batch_size must be >= 1")
        if self.max_seq_len < 64:
            problems.append("max_seq_len must be >= 64")
        if self.max_steps < 0:
            problems.append("max_steps must be >= 0")
        if not 0 < self.holdout_percent < 100:
            problems.append("holdout_percent must be in (0, 100)")
        if not 0.0 <= self.refusal_share < 1.0:
            problems.append("refusal_share must be in [0, 1)")
        if self.sources_per_example < 1:
            problems.append("sources_per_example must be >= 1")
        if self.generated_per_chunk < 0:
            problems.append("generated_per_chunk must be >= 0")
        if not self.target_modules:
            problems.append("target_modules must name at least one module")
        if problems:
            raise ValueError("invalid fine-tune config: " + "; ".join(problems))
        return self

    def digest(self) -> str:
        """sha256 of the canonical JSON: two runs with the same digest trained with the same settings."""
        return hashlib.sha256(msgspec.json.encode(self, order="sorted")).hexdigest()


def load_config(data: bytes | str) -> FinetuneConfig:
    """A config from JSON (missing fields take their defaults), validated."""
    return msgspec.json.decode(data, type=FinetuneConfig).validate()


class AdapterMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """How one model variant (the base, or base + adapter) answered the held-out split.

    Rates are over the answerable cases (``answerable``) except ``refusal_recall`` (over the cases whose sources do
    not hold the answer); None where the split has no such case."""

    cases: int
    answerable: int
    correctness: float | None  # key facts stated (share per case), or token F1 with the reference where none
    citation_rate: float | None  # answered (not refused) with at least one citation, every cited [n] a real source
    false_refusal_rate: float | None  # refused although the sources hold the answer
    refusal_recall: float | None  # refused when the sources do not hold the answer
    invalid_citation_rate: float | None = None  # answers citing a number with no source behind it

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in msgspec.structs.asdict(self).items() if v is not None}


class AdapterEvalReport(msgspec.Struct, frozen=True, kw_only=True):
    """The gate's evidence and verdict: base and adapter measured in the same run on the same held-out cases."""

    base: AdapterMetrics
    adapter: AdapterMetrics
    promote: bool
    reasons: list[str]
    thresholds: GateThresholds
    heldout_hash: str = ""  # sha256 of the held-out examples: the two sides answered the same questions
