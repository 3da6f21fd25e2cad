#!/usr/bin/env python3
"""Expected token ids for tests/test_tokenizer.cpp, from the Python SentencePiece
library on the demo tokenizer, with the fairseq id mapping of XLM-R applied."""
import json
import os

import sentencepiece as spm

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sp = spm.SentencePieceProcessor(model_file=os.path.join(ROOT, "scripts/demo/model/sentencepiece.bpe.model"))

TEXTS = [
    "The morning was cool and the sky over the harbour turned pale blue.",
    "Am Wochenende wandern wir durch den Wald.",
    "Le café est très chaud, n'est-ce pas ?",
    "Сегодня в городе тепло и солнечно.",
    "今天的天气很好，我们去公园散步。",
    "東京の夏はとても暑いです。",
    "서울의 겨울은 춥습니다.",
    "الطقس جميل اليوم في المدينة.",
    "מחר נבשל מרק ירקות חם.",
    "आज बारिश के बाद मौसम ठंडा है।",
    "e\u0301te\u0301 cafe\u0301",             # combining acute accents (NFKC composes them)
    "ＦＵＬＬ－ＷＩＤＴＨ １２３",            # full-width forms
    "emoji 🌈👍🏽 family 👨‍👩‍👧 flag 🇯🇵",
    "tabs\tand\u00a0nbsp\u2003em space",
    "  leading and trailing spaces  ",
    "",
    "   ",
    "Zyxwvut qqqq unseenword 12345 !!! ???",
    "ok " * 300,
]
PAIRS = [("What is the weather?", "The sky is blue."), ("", "only b"), ("Bonjour", "")]


def model_ids(text):
    return [3 if p == 0 else p + 1 for p in sp.encode(text)]


cases = [{"text": t, "ids": [0] + model_ids(t) + [2]} for t in TEXTS]
pairs = [{"a": a, "b": b, "ids": [0] + model_ids(a) + [2, 2] + model_ids(b) + [2]} for a, b in PAIRS]
os.makedirs(os.path.join(ROOT, "tests/fixtures/tokenizer"), exist_ok=True)
with open(os.path.join(ROOT, "tests/fixtures/tokenizer/demo_cases.json"), "w", encoding="utf-8") as f:
    json.dump({"spm_pieces": sp.get_piece_size(), "cases": cases, "pairs": pairs}, f, ensure_ascii=False)
