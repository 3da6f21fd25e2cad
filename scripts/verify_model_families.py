#!/usr/bin/env python3
"""Checks xlmr-convert + xlmr-infer on the sentence-embedding model families
against PyTorch (manual; not run in CI: it needs the fixtures venv).

For each family, a small random model with the family's architecture and
config features is built with the Hugging Face class the real checkpoint
uses, saved with save_pretrained the way the real repository holds it, with
an XLMRobertaTokenizer over the demo SentencePiece model:

  e5-base     multilingual-e5-base / -large: XLMRobertaModel, 514 positions,
              one token type, LN eps 1e-5, pooler; safetensors.
              Mean pooling + L2 normalisation, "query: " / "passage: " texts.
  e5-small    multilingual-e5-small: BertModel with the XLM-R tokenizer,
              512 positions from 0, two token types, LN eps 1e-12, head dim 32,
              pad_token_id 0 as in its config.json; safetensors.
              Mean pooling + L2 normalisation.
  bge-m3      BAAI/bge-m3 dense: XLMRobertaModel, 8194 positions (8192 tokens),
              pooler; pytorch_model.bin (torch.save zip) with the
              colbert_linear.pt / sparse_linear.pt heads beside it, which the
              converter does not read. CLS pooling + L2 normalisation, texts
              of 8, ~1500 and more than 8192 tokens (truncated on both sides).

Each folder is converted with xlmr-convert (tokenizer found beside the
weights), run by xlmr-infer on the texts, and compared with PyTorch on the
same texts: embeddings with the family's pooling, and every token's
last-layer hidden state. The token counts must match exactly (the same
tokenizer on both sides), the values within --tolerance.

  /opt/xlmr-fixtures-venv/bin/python scripts/verify_model_families.py [--build-dir build]

Exit status: 0 all within tolerance, 1 a mismatch, 2 a tool failed.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SPM = os.path.join(REPO, "scripts", "demo", "model", "sentencepiece.bpe.model")
CORPUS = os.path.join(REPO, "scripts", "demo", "corpus.txt")

E5_TEXTS = [
    "query: how much protein should a female eat",
    "query: 南瓜的家常做法",
    "passage: As a general guideline, the average requirement of protein for women ages 19 to 70 is 46 grams per day.",
    "passage: The train to the coast leaves every hour from platform four.",
    "query: wie spät ist es",
    "passage: Le musée ouvre à neuf heures et ferme tôt les jours fériés.",
]


def perturb(model, seed):
    # Random init leaves LayerNorm gains at 1 and biases at 0; move every
    # parameter so that a dropped or misplaced one cannot pass.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def mean_pool(hidden, mask):
    # The pooling of the e5 model cards: masked mean over every real token.
    h = hidden.masked_fill(~mask[..., None].bool(), 0.0)
    return h.sum(dim=1) / mask.sum(dim=1)[..., None]


def xlmr_json(path):
    # The JSON section of a .xlmr file (docs/weights-format.md: offset and size at bytes 24 and 32).
    with open(path, "rb") as f:
        head = f.read(128)
        off, size = struct.unpack_from("<QQ", head, 24)
        f.seek(off)
        return json.loads(f.read(size))


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr.strip()}")
    return r


def build_e5_base(d, tok):
    from transformers import XLMRobertaConfig, XLMRobertaModel
    torch.manual_seed(10)
    cfg = XLMRobertaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_attention_heads=2,
                           num_hidden_layers=2, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2)
    m = XLMRobertaModel(cfg).eval()
    perturb(m, 11)
    m.save_pretrained(d, safe_serialization=True)
    return m


def build_e5_small(d, tok):
    from transformers import BertConfig, BertModel
    torch.manual_seed(20)
    cfg = BertConfig(vocab_size=len(tok) + 35, hidden_size=128, intermediate_size=512, num_attention_heads=4,
                     num_hidden_layers=2, max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                     pad_token_id=0, tokenizer_class="XLMRobertaTokenizer")
    m = BertModel(cfg).eval()
    perturb(m, 21)
    m.save_pretrained(d, safe_serialization=True)
    return m


def build_bge_m3(d, tok):
    from transformers import XLMRobertaConfig, XLMRobertaModel
    torch.manual_seed(30)
    cfg = XLMRobertaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_attention_heads=2,
                           num_hidden_layers=2, max_position_embeddings=8194, type_vocab_size=1, layer_norm_eps=1e-5,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2)
    m = XLMRobertaModel(cfg).eval()
    perturb(m, 31)
    m.save_pretrained(d, safe_serialization=False)
    # The multi-vector and sparse heads of the real repository: separate files.
    torch.save(torch.nn.Linear(128, 128).state_dict(), os.path.join(d, "colbert_linear.pt"))
    torch.save(torch.nn.Linear(128, 1).state_dict(), os.path.join(d, "sparse_linear.pt"))
    return m


def bge_texts():
    with open(CORPUS, encoding="utf-8") as f:
        words = f.read().split()
    long_text = " ".join(words[:1000])
    huge_text = " ".join(words * 4)
    return ["What is BGE M3?", long_text, huge_text]


FAMILIES = {
    # name: (builder, pooling, texts, max_length, expected family, batched in PyTorch)
    "e5-base": (build_e5_base, "mean", E5_TEXTS, 512, "xlmr", True),
    "e5-small": (build_e5_small, "mean", E5_TEXTS, 512, "bert", True),
    "bge-m3": (build_bge_m3, "cls", None, 8192, "xlmr", False),
}


def torch_outputs(model, tok, texts, pooling, max_length, batched):
    """Per text: (ids, hidden [n, E], normalised embedding [E])."""
    out = []
    groups = [texts] if batched else [[t] for t in texts]
    with torch.no_grad():
        for g in groups:
            enc = tok(g, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            emb = mean_pool(h, enc["attention_mask"]) if pooling == "mean" else h[:, 0]
            emb = F.normalize(emb, p=2, dim=1)
            for i in range(len(g)):
                n = int(enc["attention_mask"][i].sum())
                out.append((enc["input_ids"][i, :n].tolist(), h[i, :n], emb[i]))
    return out


def check_family(name, args, tmp, tok):
    builder, pooling, texts, max_length, family, batched = FAMILIES[name]
    texts = texts or bge_texts()
    d = os.path.join(tmp, name)
    model = builder(d, tok)
    tok.save_pretrained(d)  # sentencepiece.bpe.model + tokenizer_config.json, as in the real folders
    expected = torch_outputs(model, tok, texts, pooling, max_length, batched)

    xlmr = os.path.join(tmp, name + ".xlmr")
    conv = run([os.path.join(args.build_dir, "xlmr-convert"), d, xlmr])
    cfg = xlmr_json(xlmr)
    m, t = cfg["model"], cfg["tokenizer"]
    problems = []
    if m["family"] != family:
        problems.append(f"family {m['family']}, expected {family}")
    if t["max_length"] != max_length:
        problems.append(f"max_length {t['max_length']}, expected {max_length}")
    print(f"{name}: converted ({m['family']}, hidden {m['hidden']}, heads {m['heads']}, positions "
          f"{m['max_positions']}, max_length {t['max_length']}, eps {m['layer_norm_eps']:g}, "
          f"pooler {m['has_pooler']}, default pooling {m['pooling']}, normalize {m['normalize']})")
    for line in conv.stderr.splitlines():
        if "left out" in line or "warning" in line:
            print("  xlmr-convert:" + line.strip())

    text_file = os.path.join(tmp, name + ".txt")
    with open(text_file, "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    worst = {}
    for path in args.paths:
        r = run([os.path.join(args.build_dir, "xlmr-infer"), "--model", xlmr, "--path", path, "--pooling", pooling,
                 "--normalize", "--hidden", text_file])
        got = [json.loads(line) for line in r.stdout.splitlines()]
        if len(got) != len(texts):
            raise RuntimeError(f"xlmr-infer wrote {len(got)} lines for {len(texts)} texts")
        de = dh = 0.0
        for (ids, h, emb), g in zip(expected, got):
            if g["n_tokens"] != len(ids):
                problems.append(f"text {g['index']}: {g['n_tokens']} tokens, PyTorch {len(ids)}")
                continue
            de = max(de, (torch.tensor(g["embedding"]) - emb).abs().max().item())
            dh = max(dh, (torch.tensor(g["hidden"]) - h).abs().max().item())
        worst[path] = (de, dh)
        lens = ", ".join(str(len(e[0])) for e in expected)
        trunc = "; truncated" if "truncated" in r.stderr else ""
        print(f"  --path {path:9s} {pooling}+normalize: max|d embedding| {de:.2e}, max|d hidden| {dh:.2e}  "
              f"(tokens {lens}{trunc})")
        if not (de <= args.tolerance and dh <= args.tolerance):
            problems.append(f"--path {path}: difference above {args.tolerance:g}")
    return problems, worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"), help="folder with xlmr-convert and xlmr-infer")
    ap.add_argument("--path", default="both", choices=("fused", "reference", "both"), help="xlmr-infer compute path")
    ap.add_argument("--family", action="append", choices=sorted(FAMILIES), help="repeatable (default: all)")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep the models there")
    args = ap.parse_args()
    args.paths = ["fused", "reference"] if args.path == "both" else [args.path]
    for tool in ("xlmr-convert", "xlmr-infer"):
        if not os.access(os.path.join(args.build_dir, tool), os.X_OK):
            print(f"error: no {tool} in {args.build_dir} (build it, or pass --build-dir)", file=sys.stderr)
            return 2
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from transformers import XLMRobertaTokenizer
    tok = XLMRobertaTokenizer(vocab_file=SPM)

    tmp_ctx = None
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        tmp = args.keep
    else:
        tmp_ctx = tempfile.TemporaryDirectory(prefix="xlmr-families-")
        tmp = tmp_ctx.name
    failures = []
    try:
        for name in args.family or list(FAMILIES):
            problems, _ = check_family(name, args, tmp, tok)
            failures += [f"{name}: {p}" for p in problems]
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if tmp_ctx:
            tmp_ctx.cleanup()
    if failures:
        for f in failures:
            print("MISMATCH " + f, file=sys.stderr)
        return 1
    print(f"all families within {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
