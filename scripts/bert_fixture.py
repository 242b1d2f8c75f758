#!/usr/bin/env python3
"""Write the reference fixture for remem's BERT: what Hugging Face transformers computes.

    python3 scripts/bert_fixture.py MODEL_DIR OUT.json

MODEL_DIR is a Hugging Face BERT folder (`scripts/fetch_models.py minilm` caches
all-MiniLM-L6-v2). Needs `torch` and `transformers` (pip). For a few inputs (sentences through the
model's own tokenizer, and a long run of seeded random ids) it records the token ids and, from
`BertModel`'s last hidden state, the first 16 dimensions and the sum over all dimensions at every
position, plus the embedding layer's output for the first input. Never the weights: tests/bert.rs
loads those from the cache and must agree within 1e-3.

tests/fixtures/minilm.json was written with torch 2.15.0 and transformers 5.24.0 on the CPU.
"""

import json
import random
import sys

import torch
import transformers
from transformers import BertModel, BertTokenizerFast

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Mary went to the kitchen. John picked up the apple. Where is Mary?",
    "Memory tokens carry what a segment learned to the next segment, for inputs of any length.",
]


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    rng = random.Random(7)
    inputs = [tokenizer(s)["input_ids"] for s in SENTENCES]
    inputs.append([101] + [rng.randrange(1000, model.config.vocab_size) for _ in range(126)] + [102])
    cases = []
    with torch.no_grad():
        for i, ids in enumerate(inputs):
            tensor = torch.tensor([ids])
            hidden = model(tensor).last_hidden_state[0]
            case = {
                "text": SENTENCES[i] if i < len(SENTENCES) else None,
                "ids": ids,
                "hidden_first16": hidden[:, :16].tolist(),
                "hidden_sum": hidden.sum(-1).tolist(),
            }
            if i == 0:
                case["embeddings_first16"] = model.embeddings(tensor)[0, :, :16].tolist()
            cases.append(case)
    fixture = {
        "model": "all-MiniLM-L6-v2",
        "reference": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "cases": cases,
    }
    with open(out, "w") as f:
        json.dump(fixture, f)
        f.write("\n")
    print(f"wrote {out}: {len(cases)} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
