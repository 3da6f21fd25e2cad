#!/usr/bin/env python3
"""xlmr-engine side by side with PyTorch on one random XLM-R classifier.

Builds a random XLM-R encoder + RobertaClassificationHead with torchtext's
model code (the model of PyTorch's "Better Transformer" tutorial), saves it
with torch.save, converts it with xlmr-convert, takes the exact token-id
workloads from `xlmr-bench --dump-workload`, checks that xlmr-infer's logits
match PyTorch's, then times every system on the same ids with the same number
of threads, one whole-batch call at a time:

  engine   xlmr-bench --json (fused path, ragged batches, fp32 by default)
  slow     torchtext model through the plain nn.TransformerEncoderLayer code
  padded   torch fastpath (one native op per layer) on the padded batch
  nested   torch fastpath + sparsity: the padded batch becomes a nested tensor
  hf       Hugging Face XLMRobertaModel holding the same weights (+ the same head)
  ort      ONNX Runtime on that Hugging Face graph, exported with dynamic axes
  ort-int8 the same graph through ONNX Runtime's dynamic int8 quantization
           (quantize_dynamic, its defaults; needs the onnx package)

docs/compare.md explains the columns and how each torch mode is selected.
Run it with the fixtures environment (scripts/install-deps.sh --fixtures):
  /opt/xlmr-fixtures-venv/bin/python scripts/compare_pytorch.py --size small --iters 3
Exit status: 0 done, 1 outputs disagree (> --tolerance), 2 a tool or argument failed.
"""
import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings

import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEMO_TOKENIZER = os.path.join(REPO, "scripts", "demo", "model", "sentencepiece.bpe.model")
PAD = 1
MAX_POSITIONS = 514  # XLM-R: positions start at pad+1 = 2, so 512 real tokens fit

# E hidden, H heads, F ffn, L layers (head dim 64 in both)
SIZES = {
    "base": dict(E=768, H=12, F=3072, L=12),
    "small": dict(E=256, H=4, F=1024, L=4),
}

TORCH_MODES = ("slow", "padded", "nested", "hf", "ort", "ort-int8")
# Systems whose outputs differ from f32 by design: held to --int8-tolerance.
QUANTIZED = ("ort-int8",)
LABELS = {
    "slow": "torch slow path",
    "padded": "torch fastpath (padded)",
    "nested": "torch fastpath + nested",
    "hf": "HF transformers",
    "ort": "ONNX Runtime",
    "ort-int8": "ONNX Runtime int8",
}
# The ratio columns, in print order: the engine against each of these.
RATIO_ORDER = ("nested", "padded", "slow", "hf", "ort", "ort-int8")


class ToolError(Exception):
    pass


def note(msg):
    print("note: " + msg, flush=True)


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# torchtext import


def import_torchtext():
    # Debian's torchtext 0.14 ships its model code as pure Python, but its
    # compiled extension has no Python entry point and the package import
    # fails on it. The RoBERTa model code uses neither; stand-in modules let
    # it load (the SentencePiece transform is then unusable, and not needed:
    # the workloads are token ids already).
    sys.modules.setdefault("torchtext._extension", types.ModuleType("torchtext._extension"))
    if "torchtext._torchtext" not in sys.modules:
        ext = types.ModuleType("torchtext._torchtext")
        ext.__getattr__ = lambda name: type(name, (), {"__init__": lambda self, *a, **k: None})
        sys.modules["torchtext._torchtext"] = ext
    from torchtext.models import RobertaClassificationHead, RobertaEncoderConf, RobertaModel
    return RobertaClassificationHead, RobertaEncoderConf, RobertaModel


def build_torchtext_model(dims, vocab, seed):
    RobertaClassificationHead, RobertaEncoderConf, RobertaModel = import_torchtext()
    torch.manual_seed(seed)
    conf = RobertaEncoderConf(vocab_size=vocab, embedding_dim=dims["E"], ffn_dimension=dims["F"],
                              padding_idx=PAD, max_seq_len=MAX_POSITIONS,
                              num_attention_heads=dims["H"], num_encoder_layers=dims["L"])
    model = RobertaModel(conf, head=RobertaClassificationHead(num_classes=2, input_dim=dims["E"]))
    redraw_layer_matrices(model, seed + 2)
    perturb_vectors(model, seed + 1)
    return model.eval()


def redraw_layer_matrices(model, seed):
    """nn.TransformerEncoder builds its layers as copies of one, so every layer
    starts with the same matrices. torch.onnx.export then stores them once,
    and ONNX Runtime reads one layer's weights again and again from cache (its
    quantizer also leaves shared weights in f32): draw each layer's matrices
    afresh, uniformly over the range its init used."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in encoder_stack(model).parameters():
            if p.dim() == 2:
                bound = p.abs().max().item()
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)


def perturb_vectors(model, seed):
    """A fresh model has LayerNorm gains of 1 and several biases at 0, which
    would let a wrong gain or a dropped bias pass an output check: move every
    vector parameter a little away from its init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def encoder_stack(model):
    """The torch.nn.TransformerEncoder inside torchtext's RobertaModel."""
    return model.encoder.transformer.layers


# --------------------------------------------------------------------------
# The torch modes. Each returns a callable running one padded batch; the
# selection is checked with the profiler in verify_mode().


class SlowPath:
    """torchtext model with both torch fastpaths switched off under no_grad.

    torch 1.13 has no switch for the fastpath (later releases have
    torch.backends.mha.set_fastpath_enabled). nn.TransformerEncoder converts to
    nested tensors, and nn.TransformerEncoderLayer calls the fused
    torch._transformer_encoder_layer_fwd, only when the *layer* module is not
    training. Setting the `training` attribute of the layer modules alone
    (not .train(), which recurses) fails that check and nothing else: the
    layers' Dropout and MultiheadAttention children stay in eval mode, so no
    dropout is applied and the output is unchanged; the layer then runs its
    Python code (self_attn -> add -> norm1 -> linear1 -> gelu -> linear2 ->
    add -> norm2). MultiheadAttention's own native path stays off because
    torchtext builds it with dropout 0.1 (it requires 0); verify_mode() checks
    that no native op runs. Autograd stays off, unlike the tutorial's slow
    run (eval mode with grad enabled), whose time includes building the
    backward graph.
    """

    def __init__(self, model):
        self.model = model
        self.layers = list(encoder_stack(model).layers)

    def __call__(self, tok):
        for layer in self.layers:
            layer.training = True
        try:
            with torch.no_grad():
                return self.model(tok)
        finally:
            for layer in self.layers:
                layer.training = False


class GradSlowPath:
    """The tutorial's slow run: eval mode, autograd on (parameters require grad)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, tok):
        with torch.enable_grad():
            return self.model(tok).detach()


class FastPath:
    """model.eval() + torch.no_grad(): the Better Transformer fastpath.

    nested=True: nn.TransformerEncoder.enable_nested_tensor (torchtext sets it)
    turns the padded batch + src_key_padding_mask (torchtext derives it from
    id == 1) into a nested tensor, so padding is never computed ("fastpath +
    sparsity"). nested=False: the same fused layer op on the padded batch with
    the mask.
    """

    def __init__(self, model, nested):
        self.model = model
        self.nested = nested

    def __call__(self, tok):
        stack = encoder_stack(self.model)
        stack.enable_nested_tensor = self.nested
        try:
            with torch.no_grad():
                return self.model(tok)
        finally:
            stack.enable_nested_tensor = True


class HFWithHead(torch.nn.Module):
    """Hugging Face XLMRobertaModel + the torchtext ReLU head (HF's own head uses tanh)."""

    def __init__(self, encoder, head):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids, attention_mask):
        return self.head(self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)


def build_hf(model, dims, vocab):
    from transformers import XLMRobertaConfig, XLMRobertaModel

    cfg = XLMRobertaConfig(vocab_size=vocab, hidden_size=dims["E"], num_hidden_layers=dims["L"],
                           num_attention_heads=dims["H"], intermediate_size=dims["F"], hidden_act="gelu",
                           max_position_embeddings=MAX_POSITIONS, type_vocab_size=1, layer_norm_eps=1e-5,
                           pad_token_id=PAD, bos_token_id=0, eos_token_id=2)
    hf = XLMRobertaModel(cfg, add_pooling_layer=False)
    tt = model.state_dict()
    E = dims["E"]
    sd = {}
    p = "encoder.transformer."
    sd["embeddings.word_embeddings.weight"] = tt[p + "token_embedding.weight"]
    sd["embeddings.position_embeddings.weight"] = tt[p + "positional_embedding.embedding.weight"]
    # torchtext has no token-type table: HF's single row is zero.
    sd["embeddings.token_type_embeddings.weight"] = torch.zeros(1, E)
    sd["embeddings.LayerNorm.weight"] = tt[p + "embedding_layer_norm.weight"]
    sd["embeddings.LayerNorm.bias"] = tt[p + "embedding_layer_norm.bias"]
    for i in range(dims["L"]):
        t = f"{p}layers.layers.{i}."
        h = f"encoder.layer.{i}."
        w, b = tt[t + "self_attn.in_proj_weight"], tt[t + "self_attn.in_proj_bias"]
        for j, name in enumerate(("query", "key", "value")):  # packed rows: Q, then K, then V
            sd[h + f"attention.self.{name}.weight"] = w[j * E:(j + 1) * E]
            sd[h + f"attention.self.{name}.bias"] = b[j * E:(j + 1) * E]
        for src, dst in (("self_attn.out_proj", "attention.output.dense"),
                         ("norm1", "attention.output.LayerNorm"),
                         ("linear1", "intermediate.dense"),
                         ("linear2", "output.dense"),
                         ("norm2", "output.LayerNorm")):
            sd[h + dst + ".weight"] = tt[t + src + ".weight"]
            sd[h + dst + ".bias"] = tt[t + src + ".bias"]
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise ToolError(f"Hugging Face weight mapping: missing {missing}, unexpected {unexpected}")
    return HFWithHead(hf, model.head).eval()


class HFRun:
    def __init__(self, hf):
        self.hf = hf

    def __call__(self, tok):
        with torch.no_grad():
            return self.hf(tok, (tok != PAD).long())


class ORTRun:
    def __init__(self, session):
        self.session = session

    def __call__(self, tok):
        ids = tok.numpy()
        out = self.session.run(None, {"input_ids": ids, "attention_mask": (ids != PAD).astype(ids.dtype)})
        return torch.from_numpy(out[0])


def build_ort(hf, threads, tmp, quantized=False):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ToolError("onnxruntime is not importable (scripts/install-deps.sh --fixtures installs it)")
    path = os.path.join(tmp, "model.onnx")
    if not os.path.exists(path):
        sample = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, PAD, PAD]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(hf, (sample, (sample != PAD).long()), path,
                                  input_names=["input_ids", "attention_mask"], output_names=["logits"],
                                  dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                                "attention_mask": {0: "batch", 1: "seq"},
                                                "logits": {0: "batch"}},
                                  opset_version=14, do_constant_folding=True)
    if quantized:
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ImportError as e:
            raise ToolError(f"onnxruntime.quantization is not importable ({e}; scripts/install-deps.sh --fixtures "
                            "installs the onnx package it needs)")
        qpath = os.path.join(tmp, "model.int8.onnx")
        # Its defaults: int8 weights per tensor, uint8 activations with one
        # range per tensor, computed at run time (MatMulInteger / DynamicQuantizeLinear).
        quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
        path = qpath
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return ORTRun(session), ort.__version__


# Ops that tell the torch modes apart (profiler event names).
OP_LAYER = "aten::_transformer_encoder_layer_fwd"
OP_NESTED = "aten::_nested_tensor_from_mask"
OP_MHA = "aten::_native_multi_head_attention"


def verify_mode(mode, fn, tok, n_layers):
    """Runs fn once under the profiler; returns (output, problem or '')."""
    with torch.autograd.profiler.profile() as prof:
        out = fn(tok)
    ops = {e.key: e.count for e in prof.key_averages()}
    layer, nested, mha = ops.get(OP_LAYER, 0), ops.get(OP_NESTED, 0), ops.get(OP_MHA, 0)
    problem = ""
    if mode == "slow":
        if layer or nested or mha:
            problem = f"native ops ran ({OP_LAYER} x{layer}, {OP_NESTED} x{nested}, {OP_MHA} x{mha})"
        elif not ops.get("aten::layer_norm"):
            problem = "aten::layer_norm did not run"
    elif mode == "padded":
        if layer != n_layers or nested:
            problem = f"expected {OP_LAYER} x{n_layers} and no {OP_NESTED}, got x{layer} and x{nested}"
    elif mode == "nested":
        if layer != n_layers or nested != 1:
            problem = f"expected {OP_LAYER} x{n_layers} and {OP_NESTED} x1, got x{layer} and x{nested}"
    return out, problem


def time_calls(fn, arg, warmup, iters, min_time):
    """At least `iters` timed calls and `min_time` seconds of them, as xlmr-bench does."""
    for _ in range(warmup):
        fn(arg)
    times = []
    while len(times) < iters or sum(times) < min_time * 1e3:
        t0 = time.perf_counter()
        fn(arg)
        times.append((time.perf_counter() - t0) * 1e3)
    return summarize(times)


def summarize(ms):
    s = sorted(ms)
    p99 = s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]
    return {"mean": statistics.fmean(s), "p50": statistics.median(s), "p99": p99, "min": s[0], "n": len(s)}


# --------------------------------------------------------------------------
# Engine tools


def find_tool(build_dir, name, required=True):
    path = os.path.join(build_dir, name)
    if os.access(path, os.X_OK):
        return path
    if required:
        raise ToolError(f"{path} not found: build it (cmake -S {REPO} -B {build_dir} && make -C {build_dir} {name})")
    return None


def tool_env(tool):
    """The environment for one of the engine's programs. A carried build
    (scripts/gpu-check.sh --pack) keeps the shared libraries it needs in
    BUILD/lib; they are made visible to the program alone, not to Python."""
    lib = os.path.join(os.path.dirname(os.path.abspath(tool)), "lib")
    if not os.path.isdir(lib):
        return None
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


def run_tool(cmd, what, log_path=None):
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tool_env(cmd[0]))
    if log_path:
        with open(log_path, "a") as f:
            f.write("$ " + " ".join(cmd) + "\n" + res.stdout + res.stderr + "\n")
    if res.returncode != 0:
        lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
        raise ToolError(f"{what} failed (exit {res.returncode}): {lines[-1] if lines else '(no message)'}")
    return res


def workload_args(specs):
    args = []
    for w in specs:
        args += ["--workload", w]
    return args


def parse_variant(v):
    parts = v.split("/")
    if len(parts) != 3:
        raise ToolError(f"--engine '{v}': expected PATH/LAYOUT/DTYPE, e.g. fused/ragged/f32")
    return tuple(parts)


def run_engine_bench(bench, model, specs, variant, args, tmp):
    path, layout, dtype = variant
    out = os.path.join(tmp, f"bench-{path}-{layout}-{dtype}.json")
    cmd = [bench, "--model", model, "--threads", str(args.threads), "--path", path, "--layout", layout,
           "--dtype", dtype, "--iters", str(args.iters), "--warmup", str(args.warmup),
           "--min-time", str(args.min_time), "--json", out, "--quiet"]
    run_tool(cmd + workload_args(specs), "xlmr-bench " + "/".join(variant), os.path.join(tmp, "bench.log"))
    with open(out) as f:
        return json.load(f)


def engine_numbers(report, variant, workloads):
    """Maps each workload name to the engine's run of `variant` on it."""
    runs = [r for r in report.get("runs", [])
            if (r.get("path"), r.get("layout"), r.get("dtype")) == variant]
    found = {}
    for i, w in enumerate(workloads):
        match = [r for r in runs if r.get("workload") == w["name"]]
        if not match and len(runs) == len(workloads):
            match = [runs[i]]  # the same order as asked
        if not match:
            continue
        r = match[0]
        if r.get("n_tokens") not in (None, w["n_tokens"]) or r.get("n_seqs") not in (None, w["n_seqs"]):
            note(f"xlmr-bench ran {r.get('n_seqs')} seqs / {r.get('n_tokens')} tokens for '{w['name']}', "
                 f"the dumped workload has {w['n_seqs']} / {w['n_tokens']}")
        lat = r["latency_ms"]
        found[w["name"]] = {"latency_ms": {k: lat.get(k) for k in ("mean", "p50", "p99", "min")},
                            "bench_tokens_per_s": r.get("tokens_per_s")}
    return found


def infer_logits(infer, model, seqs, path, threads, tmp, dtype=None):
    ids_path = os.path.join(tmp, "ids.txt")
    out_path = os.path.join(tmp, f"infer-{path}-{dtype or 'default'}.jsonl")
    with open(ids_path, "w") as f:
        for s in seqs:
            f.write(" ".join(map(str, s)) + "\n")
    extra = ["--dtype", dtype] if dtype else []
    run_tool([infer, "--model", model, "--input-format", "ids", "--threads", str(threads), "--path", path,
              *extra, "-o", out_path, ids_path], f"xlmr-infer --path {path} {' '.join(extra)}".strip())
    return read_infer_rows(out_path, len(seqs), "logits")


def read_infer_rows(path, n, field):
    """One vector per input line from xlmr-infer's JSON lines, by index."""
    rows = [None] * n
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            rows[r["index"]] = r[field]
    if any(r is None for r in rows):
        raise ToolError("xlmr-infer did not answer every input line")
    return torch.tensor(rows, dtype=torch.float32)


# --------------------------------------------------------------------------
# Workloads


def load_dumped(path):
    with open(path) as f:
        data = json.load(f)
    return [{"name": w["name"], "seqs": [list(map(int, s)) for s in w["seqs"]]} for w in data["workloads"]]


def standin_workloads(specs, vocab, tokenizer, seed):
    """Workloads made here, used only when xlmr-bench is not built: the same
    spec names, but not the engine's sequences (no engine timing then)."""
    rng = random.Random(seed)

    def rand_seq(n):
        n = max(2, min(n, MAX_POSITIONS - 2))
        return [0] + [rng.randrange(3, vocab - 1) for _ in range(n - 2)] + [2]

    def spm_ids(texts):
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=tokenizer)
        # fairseq ids: spm piece p >= 3 -> p + 1, spm unk (0) -> 3
        return [[0] + [p + 1 if p >= 3 else 3 for p in sp.encode(t)] + [2] for t in texts]

    out = []
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if spec == "tutorial-short":
            seqs = spm_ids(["Hello world", "How are you!"])
        elif spec == "tutorial-long":
            seqs = spm_ids(["Hello world", "How are you!"]) + [rand_seq(256)]
        elif kind == "uniform":
            length, _, batch = arg.partition("x")
            seqs = [rand_seq(int(length)) for _ in range(int(batch))]
        elif kind == "lognormal":
            seqs = [rand_seq(int(round(rng.lognormvariate(math.log(48), 0.8)))) for _ in range(int(arg))]
        elif kind == "range":
            span, _, budget = arg.partition(":")
            lo, _, hi = span.partition("-")
            seqs = []
            while sum(map(len, seqs)) < int(budget):
                seqs.append(rand_seq(rng.randint(int(lo), int(hi))))
        elif kind == "file":
            with open(arg) as f:
                seqs = [list(map(int, l.split())) for l in f if l.strip()]
        else:
            raise ToolError(f"unknown workload '{spec}'")
        out.append({"name": spec, "seqs": seqs})
    return out


def pad_batch(seqs):
    L = max(map(len, seqs))
    return torch.tensor([s + [PAD] * (L - len(s)) for s in seqs], dtype=torch.long)


# --------------------------------------------------------------------------
# Output


def fmt_rate(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt_ms(x):
    return "-" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def render(headers, rows, markdown):
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def tables(results, systems, engine_key, markdown):
    short = {engine_key: "engine", "slow": "slow", "padded": "fast padded", "nested": "fast+nested",
             "hf": "HF", "ort": "ORT", "ort-int8": "ORT int8"}
    present = [s for s in systems if any(s in w["systems"] for w in results)]
    ratio_cols = [m for m in RATIO_ORDER if m in present and engine_key in present]

    for s in present:
        short.setdefault(s, s)  # other engine variants: "engine PATH/LAYOUT/DTYPE"
    head = ["workload", "seqs", "tokens", "real %"] + [short[s] + " tok/s" for s in present] + \
           ["engine vs " + short[m] for m in ratio_cols]
    rows = []
    for w in results:
        row = [w["name"], str(w["n_seqs"]), str(w["n_tokens"]), f"{100.0 * w['n_tokens'] / w['padded_tokens']:.0f}"]
        row += [fmt_rate(w["systems"].get(s, {}).get("tokens_per_s")) for s in present]
        row += [fmt_ratio(w["ratios"].get(m)) for m in ratio_cols]
        rows.append(row)
    thr = render(head, rows, markdown)

    head = ["workload"] + [short[s] + " p50 ms" for s in present]
    rows = [[w["name"]] + [fmt_ms(w["systems"].get(s, {}).get("latency_ms", {}).get("p50")) for s in present]
            for w in results]
    lat = render(head, rows, markdown)
    return thr, lat


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description="Compare xlmr-engine with PyTorch (torchtext, fastpath, HF, ONNX Runtime) "
                                             "on one random XLM-R classifier: outputs and speed.")
    ap.add_argument("--size", choices=sorted(SIZES), default="base",
                    help="base: E768 H12 F3072 L12; small: E256 H4 F1024 L4 (514 positions both)")
    ap.add_argument("--vocab", type=int, default=None,
                    help="vocabulary size (default: the tokenizer's pieces + 2, as XLM-R: 1002 for the demo tokenizer)")
    ap.add_argument("--tokenizer", default=DEMO_TOKENIZER, help="SentencePiece model embedded in the .xlmr file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="threads for every system (default: all cores)")
    ap.add_argument("--workload", action="append", default=None,
                    help="xlmr-bench workload, repeatable (default: tutorial-short tutorial-long lognormal:64)")
    ap.add_argument("--iters", type=int, default=10, help="timed calls per system and workload (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="seconds of timed calls at least, per system and workload (as xlmr-bench's)")
    ap.add_argument("--systems", default=",".join(TORCH_MODES),
                    help="PyTorch-side systems to run, comma-separated from " + ",".join(TORCH_MODES))
    ap.add_argument("--slow-method", choices=("flag", "grad"), default="flag",
                    help="flag: no_grad with the layers' training flag set (default); grad: the tutorial's "
                         "eval mode with autograd on")
    ap.add_argument("--engine", action="append", default=None,
                    help="engine variant PATH/LAYOUT/DTYPE timed by xlmr-bench, repeatable; the first one is "
                         "compared in the ratio columns (default: fused/ragged/f32)")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="largest |logit difference| accepted")
    ap.add_argument("--int8-tolerance", type=float, default=0.05,
                    help="the same for the quantized systems (ort-int8), whose outputs differ from f32 by design")
    ap.add_argument("--build-dir", default="build", help="where xlmr-convert, xlmr-infer and xlmr-bench are")
    ap.add_argument("--json", metavar="FILE", help="write every number here")
    ap.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (checkpoint, .xlmr, logs)")
    args = ap.parse_args()

    specs = args.workload or ["tutorial-short", "tutorial-long", "lognormal:64"]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in TORCH_MODES:
            ap.error(f"--systems: unknown '{s}'")
    if args.threads < 1 or args.iters < 1 or args.warmup < 0 or args.min_time < 0:
        ap.error("--threads and --iters must be >= 1, --warmup and --min-time >= 0")
    build_dir = args.build_dir
    if not os.path.isabs(build_dir) and not os.path.isdir(build_dir):
        build_dir = os.path.join(REPO, build_dir)

    warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage.*")
    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="xlmr-compare-")
    try:
        return run(args, specs, systems, build_dir, tmp)
    except ToolError as e:
        print("error: " + str(e), file=sys.stderr)
        return 2
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def blas_libraries():
    """The BLAS and oneDNN libraries this process has loaded (after one matmul)."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            name = os.path.basename(p).lower()
            if "blas" in name or "dnnl" in name:
                libs.add(os.path.realpath(p))
    return sorted(libs)


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def reference_blas(libs):
    # Debian's libblas.so.3 is an alternative: openblas-pthread/libblas.so.3
    # (fast) or blas/libblas.so.3, the netlib reference (very slow).
    return any(os.path.basename(l).startswith("libblas.so") and "openblas" not in l and "blis" not in l
               for l in libs)


def run(args, specs, systems, build_dir, tmp):
    dims = SIZES[args.size]
    import sentencepiece
    n_pieces = sentencepiece.SentencePieceProcessor(model_file=args.tokenizer).get_piece_size()
    vocab = args.vocab if args.vocab is not None else n_pieces + 2
    if vocab < n_pieces + 1:
        raise ToolError(f"--vocab {vocab}: the tokenizer needs at least {n_pieces + 1} (its ids reach {n_pieces})")

    convert = find_tool(build_dir, "xlmr-convert")
    infer = find_tool(build_dir, "xlmr-infer")
    bench = find_tool(build_dir, "xlmr-bench", required=False)

    blas = blas_libraries()
    log(f"model: random XLM-R {args.size} (E{dims['E']} H{dims['H']} F{dims['F']} L{dims['L']}, vocab {vocab}, "
        f"{MAX_POSITIONS} positions), seed {args.seed}")
    log(f"threads: {args.threads}   torch {torch.__version__}   {platform.machine()}")
    log(f"torch loaded: {', '.join(blas) or 'no BLAS library found'}")
    if reference_blas(blas):
        note("torch runs on the reference BLAS (libblas.so.3 is not OpenBLAS): install libopenblas0")
    notes = []
    load_before = load_average()
    if load_before is not None and load_before > 0.5:
        notes.append(f"load average {load_before:.2f} at the start: numbers are noisy")
        note(f"load average {load_before:.2f} before the start: other processes share the cores, and with "
             "every core in use a preempted thread stalls the others at each barrier; expect noisy numbers")

    # 1-2. model -> torch.save -> xlmr-convert
    model = build_torchtext_model(dims, vocab, args.seed)
    pt = os.path.join(tmp, "model.pt")
    xlmr = os.path.join(tmp, "model.xlmr")
    torch.save(model.state_dict(), pt)
    run_tool([convert, pt, xlmr, "--tokenizer", args.tokenizer, "--heads", str(dims["H"]), "-q"], "xlmr-convert")

    # 3. workloads: the engine's own sequences
    if bench:
        wpath = os.path.join(tmp, "workloads.json")
        # One quick fused pass: the dump is all that is wanted here.
        run_tool([bench, "--model", xlmr, "--threads", str(args.threads), "--dump-workload", wpath,
                  "--path", "fused", "--layout", "ragged", "--dtype", "f32", "--warmup", "0", "--iters", "1",
                  "--min-time", "0", "--quiet"]
                 + workload_args(specs), "xlmr-bench --dump-workload", os.path.join(tmp, "bench.log"))
        workloads = load_dumped(wpath)
    else:
        msg = (f"{os.path.join(build_dir, 'xlmr-bench')} not found: stand-in workloads made here, "
               "no engine timing")
        note(msg)
        notes.append(msg)
        workloads = standin_workloads(specs, vocab, args.tokenizer, args.seed)
    for w in workloads:
        if not w["seqs"]:
            raise ToolError(f"workload '{w['name']}' is empty")
        for s in w["seqs"]:
            if not 1 <= len(s) <= MAX_POSITIONS - 2 or min(s) < 0 or max(s) >= vocab:
                raise ToolError(f"workload '{w['name']}' has a sequence of {len(s)} ids outside "
                                f"[1, {MAX_POSITIONS - 2}] tokens or [0, {vocab}) ids")
        w["n_seqs"] = len(w["seqs"])
        w["n_tokens"] = sum(map(len, w["seqs"]))
        w["max_len"] = max(map(len, w["seqs"]))
        w["padded_tokens"] = w["n_seqs"] * w["max_len"]
        w["tok"] = pad_batch(w["seqs"])

    # The PyTorch-side systems
    runners = {}
    versions = {"torch": torch.__version__}
    for mode in systems:
        try:
            if mode == "slow":
                runners[mode] = SlowPath(model) if args.slow_method == "flag" else GradSlowPath(model)
            elif mode == "padded":
                runners[mode] = FastPath(model, nested=False)
            elif mode == "nested":
                runners[mode] = FastPath(model, nested=True)
            elif mode == "hf":
                import transformers
                runners[mode] = HFRun(build_hf(model, dims, vocab))
                versions["transformers"] = transformers.__version__
            elif mode in ("ort", "ort-int8"):
                hf = runners["hf"].hf if "hf" in runners else build_hf(model, dims, vocab)
                runners[mode], versions["onnxruntime"] = build_ort(hf, args.threads, tmp, mode == "ort-int8")
        except Exception as e:  # an optional system that cannot run is skipped, with the reason
            if mode in ("hf", "ort", "ort-int8"):
                msg = f"{LABELS[mode]} skipped: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                note(msg)
                notes.append(msg)
            else:
                raise
    if "slow" not in runners:
        runners_ref = SlowPath(model)
    else:
        runners_ref = runners["slow"]

    # 5. outputs: every system against the torchtext slow path
    log("\nchecking outputs (max |logit difference| against the torchtext slow path)")
    failures = []
    accuracy = {}
    all_seqs = [s for w in workloads for s in w["seqs"]]
    ref = {}
    for w in workloads:
        out, problem = verify_mode("slow", runners_ref, w["tok"], dims["L"])
        if problem and isinstance(runners_ref, SlowPath):
            raise ToolError(f"torch slow path not selected on '{w['name']}': {problem}")
        ref[w["name"]] = out.float()
    ref_all = torch.cat([ref[w["name"]] for w in workloads])

    infer_path = None
    for path in ("fused", "reference"):
        try:
            eng = infer_logits(infer, xlmr, all_seqs, path, args.threads, tmp)
            infer_path = path
            break
        except ToolError as e:
            note(f"{e}" + ("; trying --path reference" if path == "fused" else ""))
    if infer_path is None:
        raise ToolError("xlmr-infer ran on no path")
    d = (eng - ref_all).abs().max().item()
    accuracy["xlmr-infer " + infer_path] = d
    log(f"  {'xlmr-infer --path ' + infer_path:28s} {d:.2e}  ({len(all_seqs)} sequences)")
    if not d <= args.tolerance:
        failures.append(f"xlmr-infer --path {infer_path}: {d:.3e} (tolerance {args.tolerance:g})")
    # An int8 engine variant is checked too, against the quantized systems' tolerance.
    if infer_path == "fused" and any(parse_variant(v)[2] == "int8" for v in (args.engine or [])):
        d = (infer_logits(infer, xlmr, all_seqs, "fused", args.threads, tmp, "int8") - ref_all).abs().max().item()
        accuracy["xlmr-infer fused int8"] = d
        log(f"  {'xlmr-infer --dtype int8':28s} {d:.2e}  (quantized)")
        if not d <= args.int8_tolerance:
            failures.append(f"xlmr-infer --dtype int8: {d:.3e} (tolerance {args.int8_tolerance:g})")

    for mode, fn in runners.items():
        worst = 0.0
        for w in workloads:
            out, problem = verify_mode(mode, fn, w["tok"], dims["L"])
            if problem:
                raise ToolError(f"{LABELS[mode]} not selected on '{w['name']}': {problem}")
            worst = max(worst, (out.float() - ref[w["name"]]).abs().max().item())
        accuracy[mode] = worst
        tolerance = args.int8_tolerance if mode in QUANTIZED else args.tolerance
        log(f"  {LABELS[mode]:28s} {worst:.2e}" + ("  (quantized)" if mode in QUANTIZED else ""))
        if not worst <= tolerance:
            failures.append(f"{LABELS[mode]}: {worst:.3e} (tolerance {tolerance:g})")

    if failures:  # timing systems that compute something else would mean nothing
        print("error: outputs disagree: " + "; ".join(failures), file=sys.stderr)
        return 1

    # 4. timing: PyTorch side, then the engine
    log(f"\ntiming: {args.warmup} warm-up + at least {args.iters} timed whole-batch calls and {args.min_time:g} s "
        f"each, {args.threads} threads")
    results = []
    for w in workloads:
        r = {k: w[k] for k in ("name", "n_seqs", "n_tokens", "max_len", "padded_tokens")}
        r["systems"] = {}
        for mode, fn in runners.items():
            lat = time_calls(fn, w["tok"], args.warmup, args.iters, args.min_time)
            r["systems"][mode] = {"latency_ms": lat, "tokens_per_s": w["n_tokens"] / (lat["p50"] / 1e3)}
            log(f"  {w['name']:16s} {LABELS[mode]:26s} p50 {fmt_ms(lat['p50']):>9s} ms")
        results.append(r)

    variants = [parse_variant(v) for v in (args.engine or ["fused/ragged/f32"])]
    engine_key = None
    engine_meta = {}
    if bench:
        for variant in variants:
            tries = [variant]
            if variant == variants[0] and variant[0] == "fused":
                tries.append(("reference", "padded", variant[2]))
            for v in tries:
                try:
                    report = run_engine_bench(bench, xlmr, specs, v, args, tmp)
                except ToolError as e:
                    note(str(e))
                    continue
                key = "engine " + "/".join(v)
                LABELS[key] = "xlmr-engine " + "/".join(v)
                nums = engine_numbers(report, v, workloads)
                for r in results:
                    if r["name"] in nums:
                        e = nums[r["name"]]
                        e["tokens_per_s"] = r["n_tokens"] / (e["latency_ms"]["p50"] / 1e3)
                        r["systems"][key] = e
                        log(f"  {r['name']:16s} {LABELS[key]:26s} p50 {fmt_ms(e['latency_ms']['p50']):>9s} ms")
                engine_meta = {k: report[k] for k in ("machine", "gemm_peak_gflops", "mem_bandwidth_gbs")
                               if k in report} or engine_meta
                if engine_key is None:
                    engine_key = key
                    if v != variant:
                        msg = f"engine ratios use {'/'.join(v)}: {'/'.join(variant)} did not run"
                        note(msg)
                        notes.append(msg)
                break

    for r in results:
        r["ratios"] = {}
        e = r["systems"].get(engine_key) if engine_key else None
        for mode in RATIO_ORDER:
            if e and mode in r["systems"]:
                r["ratios"][mode] = e["tokens_per_s"] / r["systems"][mode]["tokens_per_s"]

    # 6. tables
    order = ([engine_key] if engine_key else []) + \
            [k for k in LABELS if k.startswith("engine ") and k != engine_key] + list(TORCH_MODES)
    thr, lat = tables(results, order, engine_key, args.markdown)
    title = f"XLM-R {args.size}, {args.threads} threads, tokens/s = real tokens / median whole-batch latency"
    log("\n" + (f"**{title}**" if args.markdown else title) + "\n")
    log(thr)
    log("")
    log(lat)
    if engine_key:
        log(f"\n'engine vs X' = engine tokens/s / X tokens/s (above 1: the engine is faster); "
            f"engine = {LABELS[engine_key]}")
    load_after = load_average()
    for n in notes:
        log("note: " + n)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": {"size": args.size, **dims, "vocab": vocab, "positions": MAX_POSITIONS,
                                 "seed": args.seed},
                       "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
                       "min_time_s": args.min_time, "load_average": {"before": load_before, "after": load_after},
                       "slow_method": args.slow_method, "versions": versions, "blas": blas,
                       "engine_key": engine_key, "engine_report": engine_meta,
                       "labels": {k: LABELS[k] for k in order if k in LABELS},
                       "max_abs_logit_diff": accuracy, "tolerance": args.tolerance,
                       "workloads": results, "notes": notes}, f, indent=1)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
