#!/usr/bin/env python3
"""Small PyTorch-made models with expected outputs, for tests/test_pytorch.cpp.

- smoke/torchtext: torchtext XLM-R encoder + RobertaClassificationHead (ReLU),
  saved with torch.save (zip); reference run on a padded batch (pad id 1).
- smoke/hf: Hugging Face XLMRobertaForSequenceClassification (tanh head, a
  token-type row), save_pretrained as safetensors; reference run with an
  attention mask.
Both use 2 heads of dim 32 (checkpoints do not record the head count for
torchtext; the test passes --heads 2) and weights perturbed away from their
init so that no LayerNorm is trivially 1/0.

- smoke/hf_xl, smoke/fairseq_xl: the XLM-R XL layout (pre-LayerNorm) from
  transformers' XLMRobertaXLForSequenceClassification, and the same weights
  under fairseq's names.

Run with Debian's torch: /opt/xlmr-fixtures-venv/bin/python scripts/make_smoke_fixtures.py [NAME...]
"""
import json
import os
import sys
import types

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "smoke")
SEQS = [[0, 5, 6, 7, 2], [0, 9, 2], [0] + list(range(3, 33)) + [2], [0, 44, 2, 2, 45, 2]]


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


def padded(seqs):
    L = max(map(len, seqs))
    return torch.tensor([s + [1] * (L - len(s)) for s in seqs])


def dump(path, hidden, logits):
    with open(path, "w") as f:
        json.dump({"ids": SEQS,
                   "hidden": [hidden[i, :len(s)].tolist() for i, s in enumerate(SEQS)],
                   "logits": logits.tolist()}, f)


def torchtext_fixture():
    # Debian's torchtext ships its models as pure Python but cannot import its
    # compiled extension; stand-in modules let the model code load.
    sys.modules["torchtext._extension"] = types.ModuleType("torchtext._extension")
    ext = types.ModuleType("torchtext._torchtext")
    ext.__getattr__ = lambda name: type(name, (), {"__init__": lambda self, *a, **k: None})
    sys.modules["torchtext._torchtext"] = ext
    from torchtext.models import RobertaClassificationHead, RobertaEncoderConf
    from torchtext.models.roberta.bundler import RobertaBundle

    torch.manual_seed(0)
    conf = RobertaEncoderConf(vocab_size=100, embedding_dim=64, ffn_dimension=128, padding_idx=1,
                              max_seq_len=34, num_attention_heads=2, num_encoder_layers=2)
    m = RobertaBundle.build_model(encoder_conf=conf,
                                  head=RobertaClassificationHead(num_classes=3, input_dim=64)).eval()
    perturb(m, 10)
    d = os.path.join(OUT, "torchtext")
    os.makedirs(d, exist_ok=True)
    torch.save(m.state_dict(), os.path.join(d, "model.pt"))
    with torch.no_grad():
        tok = padded(SEQS)
        dump(os.path.join(d, "expected.json"), m.encoder(tok), m(tok))
    # The same weights under the older torchtext layer names, written in the
    # legacy (pre-1.6, non-zip) torch.save format; same expected outputs.
    old = {}
    for k, v in m.state_dict().items():
        k = k.replace("layers.layers.", "layers.")
        for new, prev in (("self_attn.in_proj_weight", "attention.input_projection.weight"),
                          ("self_attn.in_proj_bias", "attention.input_projection.bias"),
                          ("self_attn.out_proj.", "attention.output_projection."),
                          ("norm1.", "attention_layer_norm."), ("norm2.", "final_layer_norm."),
                          ("linear1.", "residual_mlp.mlp.0."), ("linear2.", "residual_mlp.mlp.3.")):
            k = k.replace(new, prev)
        old[k] = v
    torch.save(old, os.path.join(d, "model_oldnames_legacy.pt"), _use_new_zipfile_serialization=False)


def hf_fixture():
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(1)
    cfg = XLMRobertaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                           num_hidden_layers=2, max_position_embeddings=34, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=2)
    m = XLMRobertaForSequenceClassification(cfg).eval()
    perturb(m, 11)
    d = os.path.join(OUT, "hf")
    m.save_pretrained(d, safe_serialization=True)
    with torch.no_grad():
        tok = padded(SEQS)
        out = m(tok, attention_mask=(tok != 1).long(), output_hidden_states=True)
        dump(os.path.join(d, "expected.json"), out.hidden_states[-1], out.logits)
    # The same model in float16, torch.save'd in shards with a
    # pytorch_model.bin.index.json; its reference runs the fp16-rounded
    # weights in fp32.
    d16 = os.path.join(OUT, "hf_fp16_sharded")
    m.half().save_pretrained(d16, safe_serialization=False, max_shard_size="100KB")
    m.float()
    with torch.no_grad():
        out = m(tok, attention_mask=(tok != 1).long(), output_hidden_states=True)
        dump(os.path.join(d16, "expected.json"), out.hidden_states[-1], out.logits)


def bert_fixture():
    # BERT-arch model with the XLM-R tokenizer (multilingual-e5-small style):
    # positions from 0, two token types (row 0 used), eps 1e-12, a pooler.
    from transformers import BertConfig, BertModel

    torch.manual_seed(2)
    cfg = BertConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                     num_hidden_layers=2, max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12,
                     pad_token_id=1)
    m = BertModel(cfg).eval()
    perturb(m, 12)
    d = os.path.join(OUT, "bert")
    m.save_pretrained(d, safe_serialization=True)
    with torch.no_grad():
        tok = padded(SEQS)
        out = m(tok, attention_mask=(tok != 1).long())
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"ids": SEQS, "hidden": [out.last_hidden_state[i, :len(s)].tolist() for i, s in enumerate(SEQS)],
                   "pooler": out.pooler_output.tolist()}, f)


def fairseq_layers(f, sd, names, layers):
    """Copies the encoder layers of a Hugging Face state dict sd into f under
    fairseq's names (names: HF module -> fairseq module, per layer)."""
    for i in range(layers):
        for hf_name, fs_name in names.items():
            for wb in ("weight", "bias"):
                f[f"encoder.sentence_encoder.layers.{i}.{fs_name}.{wb}"] = sd[f"roberta.encoder.layer.{i}.{hf_name}.{wb}"]


def fairseq_fixture():
    # fairseq naming, built by renaming a Hugging Face model's tensors (fairseq
    # itself is not installable here): {'args': Namespace, 'model': state dict}
    # with separate q/k/v projections, an LM head to be ignored and a named
    # classification head. fairseq has no token-type table, so the HF model's
    # row is zeroed before the reference run.
    import argparse
    from collections import OrderedDict

    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(3)
    cfg = XLMRobertaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                           num_hidden_layers=2, max_position_embeddings=34, pad_token_id=1, type_vocab_size=1,
                           layer_norm_eps=1e-5, num_labels=3)
    m = XLMRobertaForSequenceClassification(cfg).eval()
    perturb(m, 13)
    with torch.no_grad():
        m.roberta.embeddings.token_type_embeddings.weight.zero_()
    sd = m.state_dict()
    enc = "encoder.sentence_encoder."
    f = OrderedDict()
    f[enc + "embed_tokens.weight"] = sd["roberta.embeddings.word_embeddings.weight"]
    f[enc + "embed_positions.weight"] = sd["roberta.embeddings.position_embeddings.weight"]
    f[enc + "layernorm_embedding.weight"] = sd["roberta.embeddings.LayerNorm.weight"]
    f[enc + "layernorm_embedding.bias"] = sd["roberta.embeddings.LayerNorm.bias"]
    names = {"attention.self.query": "self_attn.q_proj", "attention.self.key": "self_attn.k_proj",
             "attention.self.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
             "attention.output.LayerNorm": "self_attn_layer_norm", "intermediate.dense": "fc1",
             "output.dense": "fc2", "output.LayerNorm": "final_layer_norm"}
    fairseq_layers(f, sd, names, 2)
    f["encoder.lm_head.dense.weight"] = torch.randn(64, 64)
    f["encoder.lm_head.dense.bias"] = torch.randn(64)
    f["encoder.lm_head.layer_norm.weight"] = torch.randn(64)
    f["encoder.lm_head.layer_norm.bias"] = torch.randn(64)
    f["encoder.lm_head.weight"] = f[enc + "embed_tokens.weight"]  # tied, shares the storage
    f["encoder.lm_head.bias"] = torch.randn(100)
    for wb in ("weight", "bias"):
        f[f"classification_heads.sentence_classification_head.dense.{wb}"] = sd[f"classifier.dense.{wb}"]
        f[f"classification_heads.sentence_classification_head.out_proj.{wb}"] = sd[f"classifier.out_proj.{wb}"]
    args = argparse.Namespace(arch="roberta_base", encoder_layers=2, encoder_embed_dim=64,
                              encoder_attention_heads=2, max_positions=32, dropout=0.1)
    d = os.path.join(OUT, "fairseq")
    os.makedirs(d, exist_ok=True)
    torch.save({"args": args, "model": f}, os.path.join(d, "model.pt"))
    with torch.no_grad():
        tok = padded(SEQS)
        out = m(tok, attention_mask=(tok != 1).long(), output_hidden_states=True)
        dump(os.path.join(d, "expected.json"), out.hidden_states[-1], out.logits)


def hf_xl_fixture():
    # XLM-R XL/XXL layout (pre-LayerNorm: no embedding LayerNorm, a LayerNorm
    # before attention and before the FFN, one after the last layer), tiny,
    # from transformers' own XLMRobertaXL classes; then the same weights under
    # fairseq's names as the original XL release stores them.
    import argparse
    from collections import OrderedDict

    from transformers import XLMRobertaXLConfig, XLMRobertaXLForSequenceClassification

    torch.manual_seed(4)
    cfg = XLMRobertaXLConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                             num_hidden_layers=2, max_position_embeddings=34, pad_token_id=1, bos_token_id=0,
                             eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=2)
    m = XLMRobertaXLForSequenceClassification(cfg).eval()
    perturb(m, 14)
    with torch.no_grad():
        m.roberta.embeddings.token_type_embeddings.weight.zero_()  # fairseq has no token-type table
    d = os.path.join(OUT, "hf_xl")
    m.save_pretrained(d, safe_serialization=True)
    with torch.no_grad():
        tok = padded(SEQS)
        out = m(tok, attention_mask=(tok != 1).long(), output_hidden_states=True)
    dump(os.path.join(d, "expected.json"), out.hidden_states[-1], out.logits)

    sd = m.state_dict()
    enc = "encoder.sentence_encoder."
    f = OrderedDict()
    f[enc + "embed_tokens.weight"] = sd["roberta.embeddings.word_embeddings.weight"]
    f[enc + "embed_positions.weight"] = sd["roberta.embeddings.position_embeddings.weight"]
    names = {"attention.self.query": "self_attn.q_proj", "attention.self.key": "self_attn.k_proj",
             "attention.self.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
             "attention.self_attn_layer_norm": "self_attn_layer_norm", "intermediate.dense": "fc1",
             "output.dense": "fc2", "LayerNorm": "final_layer_norm"}
    fairseq_layers(f, sd, names, 2)
    for wb in ("weight", "bias"):
        f[f"{enc}layer_norm.{wb}"] = sd[f"roberta.encoder.LayerNorm.{wb}"]
        f[f"classification_heads.mnli.dense.{wb}"] = sd[f"classifier.dense.{wb}"]
        f[f"classification_heads.mnli.out_proj.{wb}"] = sd[f"classifier.out_proj.{wb}"]
    args = argparse.Namespace(arch="roberta_xl", encoder_layers=2, encoder_embed_dim=32, encoder_attention_heads=2,
                              encoder_normalize_before=True, max_positions=32)
    d = os.path.join(OUT, "fairseq_xl")
    os.makedirs(d, exist_ok=True)
    torch.save({"args": args, "model": f}, os.path.join(d, "model.pt"))
    dump(os.path.join(d, "expected.json"), out.hidden_states[-1], out.logits)


FIXTURES = {"torchtext": lambda: torchtext_fixture(), "hf": lambda: hf_fixture(), "bert": lambda: bert_fixture(),
            "fairseq": lambda: fairseq_fixture(), "hf_xl": lambda: hf_xl_fixture()}

if __name__ == "__main__":
    # Arguments name the fixtures to make (default: all).
    for name in sys.argv[1:] or FIXTURES:
        FIXTURES[name]()
