#!/usr/bin/env python3
"""Manual check at the real XLM-R base size (not run in CI: ~2.3 GB on disk).

Builds random XLM-R base models (vocab 250002, hidden 768, 12 layers) with
torchtext (ReLU head, torch.save) and Hugging Face (tanh head, safetensors
folder), runs PyTorch on three id sequences, then xlmr-convert + xlmr-infer,
and prints the largest differences. Run from an empty folder:
  /opt/xlmr-fixtures-venv/bin/python scripts/verify_base_config.py BUILD_DIR
"""
import subprocess
import sys, types, json, torch
sys.modules['torchtext._extension'] = types.ModuleType('torchtext._extension')
tt = types.ModuleType('torchtext._torchtext'); tt.__getattr__ = lambda n: type(n, (), {'__init__': lambda s,*a,**k: None}); sys.modules['torchtext._torchtext'] = tt
from torchtext.models import RobertaEncoderConf, RobertaClassificationHead
from torchtext.models.roberta.bundler import RobertaBundle
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
torch.manual_seed(0)
seqs = [[0] + [int(x) for x in torch.randint(3, 250000, (n,))] + [2] for n in (5, 17, 40)]
L = max(map(len, seqs)); tok = torch.tensor([s + [1] * (L - len(s)) for s in seqs])
open('ids.txt', 'w').write('\n'.join(' '.join(map(str, s)) for s in seqs) + '\n')
conf = RobertaEncoderConf(vocab_size=250002, embedding_dim=768, ffn_dimension=3072, padding_idx=1, max_seq_len=514, num_attention_heads=12, num_encoder_layers=12)
m = RobertaBundle.build_model(encoder_conf=conf, head=RobertaClassificationHead(num_classes=2, input_dim=768)).eval()
torch.save(m.state_dict(), 'tt_base.pt')
with torch.no_grad():
    json.dump({'logits': m(tok).tolist(), 'hidden': [m.encoder(tok)[i, :len(s)].tolist() for i, s in enumerate(seqs)]}, open('exp_tt.json', 'w'))
del m
cfg = XLMRobertaConfig(vocab_size=250002, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, max_position_embeddings=514, pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=2)
h = XLMRobertaForSequenceClassification(cfg).eval()
h.save_pretrained('hf_base', safe_serialization=True)
with torch.no_grad():
    o = h(tok, attention_mask=(tok != 1).long(), output_hidden_states=True)
    json.dump({'logits': o.logits.tolist(), 'hidden': [o.hidden_states[-1][i, :len(s)].tolist() for i, s in enumerate(seqs)]}, open('exp_hf.json', 'w'))


B = sys.argv[1] if len(sys.argv) > 1 else "build"
worst = 0.0
for name, src_path in (("tt", "tt_base.pt"), ("hf", "hf_base")):
    subprocess.run([B + "/xlmr-convert", src_path, name + "_base.xlmr"], check=True)
    with open("ids.txt") as fin, open("out_" + name + ".jsonl", "w") as fout:
        subprocess.run([B + "/xlmr-infer", "--model", name + "_base.xlmr", "--input-format", "ids", "--hidden"],
                       stdin=fin, stdout=fout, check=True)
    e = json.load(open("exp_" + name + ".json")); o = [json.loads(l) for l in open("out_" + name + ".jsonl")]
    dl = max(abs(a - b) for i, r in enumerate(o) for a, b in zip(r["logits"], e["logits"][i]))
    dh = max(abs(a - b) for i, r in enumerate(o) for ra, rb in zip(r["hidden"], e["hidden"][i]) for a, b in zip(ra, rb))
    print(name, "max|dlogits|", dl, "max|dhidden|", dh)
    worst = max(worst, dl, dh)
sys.exit(0 if worst <= 1e-4 else 1)
