#!/usr/bin/env python3
"""Write the reference fixtures for remem's Llama decoder and its tokenizers: what Hugging Face
transformers computes.

    python3 scripts/llama_fixture.py GGUF_FILE OUT.json TINY_DIR    (GGUF_FILE `-`: the tiny one only)

Needs `torch`, `transformers`, `accelerate` and `gguf` (pip). Two fixtures:

1. OUT.json, for the real SmolLM2-135M-Instruct GGUF (`scripts/fetch_models.py smollm2`), loaded
   the way transformers loads GGUF files (dequantised to f32, the query and key rows permuted back
   to the half-split rotary convention, the byte-level BPE rebuilt from the file's vocabulary and
   merges): token ids of a few texts, and for a few inputs the first 16 logits, the log-sum-exp
   and the arg-max at every position, and greedy decoding's 16 next tokens. Never the weights:
   tests/llama.rs loads those from the cache and must agree within 1e-3.
2. TINY_DIR, a tiny randomly initialised Llama in Hugging Face's format (`config.json` and
   `model.safetensors` with the hub's tensor names, the half-split rotary convention, untied
   output), and TINY_DIR/reference.json with every logit for one input: the test of the loader
   for hub files, small enough to keep in the repository.

tests/fixtures/smollm2.json and tests/fixtures/tiny-llama/ were written with torch 2.15.0,
transformers 5.24.0 and gguf 0.19.0 on the CPU.
"""

import json
import os
import random
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

# Texts for the tokenizer: no digits (llama.cpp's `smollm` pre-tokenizer, which remem follows,
# splits digits one by one; transformers' GGUF conversion does not), but spaces, punctuation,
# accents, quotes and a control token.
TEXTS = [
    "The capital of France is Paris. The capital of Germany is",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune,"
    " must be in want of a wife.",
    "  Naïve café — “quoted” words, tabs\tand\nnew lines;  double  spaces!",
    "<|im_start|>user\nWhere is Mary?<|im_end|>",
]
PROMPT = TEXTS[0]


def logit_summary(logits):
    return {
        "logits_first16": logits[:, :16].tolist(),
        "logsumexp": torch.logsumexp(logits.double(), -1).tolist(),
        "argmax": logits.argmax(-1).tolist(),
    }


def smollm2(path, out):
    folder, name = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    texts = [{"text": t, "ids": tokenizer(t, add_special_tokens=False)["input_ids"]} for t in TEXTS]
    rng = random.Random(11)
    inputs = [texts[0]["ids"], texts[1]["ids"], [rng.randrange(0, 49152) for _ in range(160)]]
    cases = []
    with torch.no_grad():
        for ids in inputs:
            logits = model(torch.tensor([ids])).logits[0]
            cases.append({"ids": ids, **logit_summary(logits)})
        prompt = torch.tensor([texts[0]["ids"]])
        greedy = model.generate(prompt, max_new_tokens=16, do_sample=False)[0, prompt.shape[1]:]
    fixture = {
        "model": name,
        "reference": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "texts": texts,
        "cases": cases,
        "greedy": {"prompt": PROMPT, "ids": greedy.tolist(), "text": tokenizer.decode(greedy)},
    }
    with open(out, "w") as f:
        json.dump(fixture, f)
        f.write("\n")
    print(f"wrote {out}: greedy continuation {fixture['greedy']['text']!r}", file=sys.stderr)


def tiny(folder):
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                         max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=False,
                         initializer_range=0.2)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1, so a mix-up of them shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.5 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    os.remove(os.path.join(folder, "generation_config.json"))
    ids = [random.Random(5).randrange(0, 96) for _ in range(24)]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump({"reference": f"transformers {transformers.__version__}, torch {torch.__version__}",
                   "ids": ids, "logits": logits.tolist()}, f)
        f.write("\n")
    print(f"wrote {folder}", file=sys.stderr)


def main():
    path, out, tiny_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    tiny(tiny_dir)
    if path != "-":
        smollm2(path, out)


if __name__ == "__main__":
    main()
