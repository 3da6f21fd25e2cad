#!/usr/bin/env python3
"""Manual check of --dtype int8 on models with outlier channels (not run in CI: ~1.4 GB on disk).

Trained BERT-family models have a few hidden or FFN channels far larger than the
rest in every token; per-token int8 quantization spends a token's 255 steps on
them. No trained checkpoint can be downloaded here, so this builds random
XLM-R base-size models (Hugging Face code, vocab 1000) and plants such
channels in them:
  plain       the default initialization
  ln-20       every LayerNorm's gamma 20 and beta 5 in hidden dims 77 and 588
  ffn-30      FFN channels 5, 1000 and 2047 of every layer 30x (FFN1 rows and
              bias), their FFN2 columns 1/30, so the layer's output is unchanged
  ffn-100     the same, 100x
then runs xlmr-infer on 40 random id lines (1,675 tokens) in f32, int8 and
int8 --no-equalize, and prints each int8 mode's token hidden-state cosine to
f32 (over all 768 dims, and without dims 77 and 588). Run from an empty folder:
  /opt/xlmr-fixtures-venv/bin/python scripts/verify_int8_outliers.py BUILD_DIR
"""
import json
import math
import random
import subprocess
import sys

import torch
from transformers import XLMRobertaConfig, XLMRobertaModel

B = sys.argv[1] if len(sys.argv) > 1 else "build"
HIDDEN_OUTLIERS = [77, 588]
FFN_OUTLIERS = [5, 1000, 2047]


def make_model(kind, path):
    torch.manual_seed(0)
    cfg = XLMRobertaConfig(vocab_size=1000, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                           num_hidden_layers=12, max_position_embeddings=514, pad_token_id=1, type_vocab_size=1,
                           layer_norm_eps=1e-5)
    m = XLMRobertaModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        if kind.startswith("ln-"):
            g = float(kind[3:])
            for name, p in m.named_parameters():
                if "LayerNorm.weight" in name:
                    p[HIDDEN_OUTLIERS] = g
                if "LayerNorm.bias" in name:
                    p[HIDDEN_OUTLIERS] = g / 4
        if kind.startswith("ffn-"):
            g = float(kind[4:])
            for layer in m.encoder.layer:
                fc1, fc2 = layer.intermediate.dense, layer.output.dense
                for c in FFN_OUTLIERS:
                    fc1.weight[c] *= g
                    fc1.bias[c] = g / 4
                    fc2.weight[:, c] /= g
    m.save_pretrained(path, safe_serialization=True)


def run(model, *flags):
    with open("ids.txt") as ids:
        out = subprocess.run([B + "/xlmr-infer", "--model", model, "--input-format", "ids", "--hidden", *flags],
                             stdin=ids, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def cosine(x, y, skip=()):
    d = a = b = 0.0
    for i, (p, q) in enumerate(zip(x, y)):
        if i in skip:
            continue
        d += p * q
        a += p * p
        b += q * q
    return d / math.sqrt(a * b)


def stats(ref, got, skip=()):
    cs = sorted(cosine(x, y, skip) for r, g in zip(ref, got) for x, y in zip(r["hidden"], g["hidden"]))
    return cs[0], sum(cs) / len(cs)


random.seed(1)
with open("ids.txt", "w") as f:
    for _ in range(40):
        n = random.choice([5, 12, 30, 60, 120])
        f.write(" ".join(["0"] + [str(random.randint(3, 999)) for _ in range(n)] + ["2"]) + "\n")

print("| model | int8 mode | worst token cosine | mean | worst, without dims 77 and 588 |")
print("|---|---|---:|---:|---:|")
for kind in ("plain", "ln-20", "ffn-30", "ffn-100"):
    make_model(kind, "hf_" + kind)
    subprocess.run([B + "/xlmr-convert", "hf_" + kind, kind + ".xlmr"], check=True, capture_output=True)
    ref = run(kind + ".xlmr", "--dtype", "f32")
    for mode, flags in (("equalized (default)", ["--dtype", "int8"]),
                        ("--no-equalize", ["--dtype", "int8", "--no-equalize"])):
        got = run(kind + ".xlmr", *flags)
        worst, mean = stats(ref, got)
        worst_rest, _ = stats(ref, got, set(HIDDEN_OUTLIERS))
        print(f"| {kind} | {mode} | {worst:.5f} | {mean:.5f} | {worst_rest:.5f} |", flush=True)
