"""Text tokens of the prefix: the tokenizer (saved with every run) and the per-sample token layout.

Tokenizers are `tokenizers`-library JSON files, loaded offline. `tiny`/`small` use a byte-level
tokenizer built here (`<pad>`=0, `<bos>`=1, `<eos>`=2, then the 256 byte symbols, no merges: any
UTF-8 text encodes, nothing to train, identical on every machine); `paligemma*` use the checkpoint's
own `tokenizer.json` (Gemma: `<pad>`=0, `<eos>`=1, `<bos>`=2).

Per sample, PaliGemma's prefix-LM layout (ar/response flags as in attention.py):

    <bos> prompt "\\n"          ar 0, no loss   (prompt = prompt.txt, else instruction.txt)
    target <eos>               ar 1, text loss (target.txt, or the last assistant turn of a conversation)
    action tokens <eos>        ar 1, action-token loss (discrete ids mapped to the vocabulary tail)

pi0.5 (`discrete_state`): a sample with a state gets openpi's prompt instead,
`<bos> "Task: {instruction}, State: {bins};\nAction: "`, the normalised, padded state cut into 256
bins over [-1, 1] (`pi05_prompt`; LeRobot's `Pi05PrepareStateTokenizerProcessorStep` builds the same).

Action token k becomes id V - 1 - skip - k (openpi/LeRobot: skip = 128 reserved `<seg>` ids for
PaliGemma, 0 for the tiny vocabulary, whose tail is reserved for them). Sequences longer than
`max_text_tokens` keep the whole response when they can and cut the prompt's end; `truncated` counts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotrain.dataset import keys
from cotrain.errors import ConfigError, DataError

__all__ = ["KIND_ACTION", "KIND_NONE", "KIND_TEXT", "TEXT_MEMBERS", "TextLayout", "TextTokenizer",
           "build_byte_tokenizer", "pi05_prompt", "text_tokens_bound"]

TOKENIZER_FILE = "tokenizer.json"
KIND_NONE, KIND_TEXT, KIND_ACTION = 0, 1, 2
_ASSISTANT_ROLES = ("assistant", "gpt", "model", "bot")


class TextTokenizer:
    """A `tokenizers.Tokenizer` with the special ids the layout needs.

    Args:
        tokenizer: the underlying tokenizer; must know `<bos>`, `<eos>` and `<pad>`.
        source: where it came from (for error messages).
    """

    def __init__(self, tokenizer: Any, source: str = "built-in byte tokenizer") -> None:
        self.tokenizer = tokenizer
        ids = {name: tokenizer.token_to_id(name) for name in ("<bos>", "<eos>", "<pad>")}
        missing = [k for k, v in ids.items() if v is None]
        if missing:
            raise ConfigError(f"{source}: tokenizer has no {missing[0]} token (needs <bos>, <eos> and <pad>)")
        self.bos_id, self.eos_id, self.pad_id = ids["<bos>"], ids["<eos>"], ids["<pad>"]
        self.newline = self.encode("\n")

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def save(self, directory: Path) -> Path:
        from cotrain.atomic import write_text_atomic

        path = directory / TOKENIZER_FILE
        write_text_atomic(path, self.tokenizer.to_str(pretty=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise ConfigError(f"{path}: tokenizer file not found")
        try:
            return cls(Tokenizer.from_file(str(path)), str(path))
        except Exception as exc:  # tokenizers raises its own Exception type on a corrupt file
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{path}: unreadable tokenizer: {exc}") from None


def build_byte_tokenizer() -> TextTokenizer:
    """The deterministic byte-level tokenizer of the random-init presets (259 ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, **{ch: i + 3 for i, ch in enumerate(alphabet)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<pad>", "<bos>", "<eos>"])
    return TextTokenizer(tok)


@dataclass(frozen=True)
class TextLayout:
    """How one sample's text becomes prefix tokens (see module docstring).

    Args:
        tokenizer: the text tokenizer.
        lm_vocab_size: rows of the language model's embedding (V).
        action_vocab_size: discrete action ids accepted (0: none).
        action_token_skip: ids skipped at the vocabulary tail.
        max_tokens: cap on the tokens of one sample.
    """

    tokenizer: TextTokenizer
    lm_vocab_size: int
    action_vocab_size: int
    action_token_skip: int
    max_tokens: int
    discrete_state: bool = False

    def action_id(self, token: int) -> int:
        return self.lm_vocab_size - 1 - self.action_token_skip - int(token)

    def encode(self, sample: dict[str, Any]) -> tuple[list[int], list[int], bool]:
        """(ids, kinds, truncated) of one sample; kinds are KIND_* per token."""
        tok = self.tokenizer
        prompt_text, target = _prompt_and_target(sample)
        if self.discrete_state and sample.get("state") is not None:
            prompt = [tok.bos_id, *tok.encode(pi05_prompt(prompt_text, sample["state"]))]
        else:
            prompt = [tok.bos_id, *tok.encode(prompt_text), *tok.newline]
        response: list[int] = []
        kinds: list[int] = []
        if target is not None:
            ids = [*tok.encode(target), tok.eos_id]
            response += ids
            kinds += [KIND_TEXT] * len(ids)
        if sample.get("action_tokens") is not None:
            ids = [*self._action_ids(sample), tok.eos_id]
            response += ids
            kinds += [KIND_ACTION] * len(ids)
        room = self.max_tokens - len(response)
        truncated = len(prompt) + len(response) > self.max_tokens
        if room < 2:  # keep <bos> and one prompt token; cut the response's end
            response, kinds, room = response[: self.max_tokens - 2], kinds[: self.max_tokens - 2], 2
        prompt = prompt[:room]
        return prompt + response, [KIND_NONE] * len(prompt) + kinds, truncated

    def _action_ids(self, sample: dict[str, Any]) -> list[int]:
        tokens = [int(t) for t in sample["action_tokens"]]
        bad = [t for t in tokens if not 0 <= t < self.action_vocab_size]
        if bad:
            raise DataError(sample.get("key") or "?", f"action token {bad[0]} is outside the model's action "
                                                       f"vocabulary [0, {self.action_vocab_size})")
        return [self.action_id(t) for t in tokens]


TEXT_MEMBERS = (keys.PROMPT, keys.INSTRUCTION, keys.TARGET, keys.CONVERSATION, keys.ACTION_TOKENS)
_NPY_HEADER_BYTES = 128  # np.save's header of a 1-D array (format 1.0, padded to 64-byte multiples)


def text_tokens_bound(sizes: Any, newline: int) -> Any:
    """Tokens `TextLayout.encode` gives each sample, from its member sizes alone: `sizes` [N, 5] are
    the bytes of TEXT_MEMBERS (-1: absent), `newline` the tokens of "\\n". Exact for the byte
    tokenizer (one token per UTF-8 byte); an upper bound for a subword tokenizer whose tokens each
    cover at least one byte. Action tokens are counted as int32 ids (cotrain_converters/tokens.py writes them so)."""
    import numpy as np

    prompt, instruction, target, conversation, tokens = (sizes[:, j] for j in range(5))
    prompt_bytes = np.where(prompt > 0, prompt, np.maximum(instruction, 0))
    text = 1 + prompt_bytes + newline + np.where(target >= 0, target + 1, 0)
    # A conversation gives both sides (from its JSON, longer than its contents); one without an
    # assistant turn falls back to prompt and instruction.
    text = np.where(conversation >= 0, np.maximum(text, 1 + conversation + newline + 1), text)
    n_tokens = np.maximum(tokens - _NPY_HEADER_BYTES, 0) // 4
    return text + np.where(tokens >= 0, n_tokens + 1, 0)


def pi05_prompt(task: str, state: Sequence[float]) -> str:
    """openpi's pi0.5 prompt: the task and the state (normalised to [-1, 1]) as 256-bin integers."""
    import numpy as np

    edges = np.linspace(-1.0, 1.0, 256 + 1)[:-1]
    bins = np.digitize(np.asarray(state, dtype=np.float32), bins=edges) - 1
    clean = task.strip().replace("_", " ").replace("\n", " ")
    return f"Task: {clean}, State: {' '.join(str(int(b)) for b in bins)};\nAction: "


def _prompt_and_target(sample: dict[str, Any]) -> tuple[str, str | None]:
    conversation = sample.get("conversation")
    if conversation:
        turns = json.loads(conversation) if isinstance(conversation, (str, bytes)) else conversation
        last = max((i for i, t in enumerate(turns) if str(t.get("role", "")).lower() in _ASSISTANT_ROLES), default=None)
        if last is not None:
            before = "\n".join(str(t.get("content", "")) for t in turns[:last])
            return before, str(turns[last].get("content", ""))
    prompt = sample.get("prompt") or sample.get("instruction") or ""
    target = sample.get("target")
    return str(prompt), (None if target is None else str(target))
