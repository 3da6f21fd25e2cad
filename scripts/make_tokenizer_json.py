#!/usr/bin/env python3
"""The demo tokenizer as a Hugging Face fast tokenizer's tokenizer.json, for
tests/test_tokenizer.cpp: transformers' own XLM-R converter turns the demo
SentencePiece model into tests/fixtures/tokenizer/demo_tokenizer.json. The
test rebuilds a SentencePiece model from it and checks the ids of
demo_cases.json (Python SentencePiece on the original model).

Run with the fixtures venv: /opt/xlmr-fixtures-venv/bin/python scripts/make_tokenizer_json.py
"""
import json
import os
import shutil
import tempfile

import transformers
from transformers import XLMRobertaTokenizer, XLMRobertaTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SPM = os.path.join(ROOT, "scripts/demo/model/sentencepiece.bpe.model")
OUT = os.path.join(ROOT, "tests/fixtures/tokenizer/demo_tokenizer.json")

fast = XLMRobertaTokenizerFast(vocab_file=SPM)  # converted from the slow tokenizer
with tempfile.TemporaryDirectory() as tmp:
    fast.save_pretrained(tmp)
    shutil.copy(os.path.join(tmp, "tokenizer.json"), OUT)

# How far the fast tokenizer itself agrees with SentencePiece on the cases
# (for information; the engine follows SentencePiece).
slow = XLMRobertaTokenizer(SPM)
with open(os.path.join(ROOT, "tests/fixtures/tokenizer/demo_cases.json"), encoding="utf-8") as f:
    cases = json.load(f)["cases"]
agree = sum(fast(c["text"])["input_ids"] == c["ids"] for c in cases)
slow_agree = sum(slow(c["text"])["input_ids"] == c["ids"] for c in cases)
print(f"transformers {transformers.__version__}: wrote {os.path.relpath(OUT, ROOT)} "
      f"({os.path.getsize(OUT)} bytes); fast tokenizer agrees with SentencePiece on {agree}/{len(cases)} cases, "
      f"slow on {slow_agree}/{len(cases)}")
