#!/usr/bin/env python3
"""Builds the demo model shipped in scripts/demo/model/ (deterministic).

- A SentencePiece Unigram tokenizer trained on scripts/demo/corpus.txt the way
  XLM-R's is set up (unk=0, bos=1, eos=2, nmt_nfkc normalisation).
- A random-weight Hugging Face XLMRobertaForSequenceClassification whose
  vocabulary follows the fairseq id mapping (pieces + 2 ids), saved with
  save_pretrained as safetensors. The build converts it to build/demo.xlmr.

Run with Debian's torch: /opt/xlmr-fixtures-venv/bin/python scripts/make_demo.py
"""
import os

import sentencepiece as spm
import torch
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
OUT = os.path.join(HERE, "model")


def train_tokenizer():
    os.makedirs(OUT, exist_ok=True)
    prefix = os.path.join(OUT, "sentencepiece.bpe")  # XLM-R's file name, although the model is Unigram
    spm.SentencePieceTrainer.train(
        input=os.path.join(HERE, "corpus.txt"), model_prefix=prefix, model_type="unigram",
        vocab_size=1000, hard_vocab_limit=False, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, num_threads=1, seed_sentencepiece_size=100000, minloglevel=2)
    os.remove(prefix + ".vocab")
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def build_model(n_pieces):
    torch.manual_seed(2024)
    cfg = XLMRobertaConfig(vocab_size=n_pieces + 2, hidden_size=64, intermediate_size=128,
                           num_attention_heads=1, num_hidden_layers=2, max_position_embeddings=130,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
                           layer_norm_eps=1e-5, num_labels=2,
                           id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    m = XLMRobertaForSequenceClassification(cfg).eval()
    m.half().save_pretrained(OUT, safe_serialization=True)  # f16 keeps the repo small


if __name__ == "__main__":
    sp = train_tokenizer()
    build_model(sp.get_piece_size())
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))
