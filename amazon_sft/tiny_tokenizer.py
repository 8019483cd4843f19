"""Build the small byte-level BPE tokenizer behind ``builtin:tiny``, offline, with `tokenizers`.

The result is committed in ``amazon_sft/assets/tiny-tokenizer`` so tests never train or download
one; ``python -m amazon_sft.tiny_tokenizer`` rebuilds it (the same bytes each time).
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import yaml

from amazon_sft.data.synthetic import generate_rows

OUT_DIR = Path(__file__).parent / "assets" / "tiny-tokenizer"
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
VOCAB_SIZE = 2048


def _corpus(n_rows: int = 4000) -> list[str]:
    lines, _ = generate_rows(n_rows, seed=7)
    texts = []
    for line in lines:
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(row, dict):
            texts += [str(row.get("title", "")), str(row.get("content", ""))]
    templates = yaml.safe_load((Path(__file__).parent / "templates" / "questions.yaml").read_text())
    for phrasings in templates["questions"].values():
        texts += [p.format(title="") for p in phrasings] * 50
    texts += [templates["plain"]["prefix"] + templates["plain"]["suffix"]] * 50
    return texts


def build_tiny_tokenizer(out_dir: Path = OUT_DIR) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<unk>",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "model_max_length": 4096,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


if __name__ == "__main__":
    print(build_tiny_tokenizer())
