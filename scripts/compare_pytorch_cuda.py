#!/usr/bin/env python3
"""xlmr-engine against PyTorch on one GPU (or, for a dry run, the CPU).

One random XLM-R encoder (Hugging Face XLMRobertaModel, saved with
save_pretrained as safetensors and converted with xlmr-convert) runs on the
exact token-id workloads of `xlmr-bench --dump-workload`, in the same process
for the PyTorch side and through xlmr-bench for the engine:

  engine   xlmr-bench --device DEV --dtype DTYPE (ragged batches, CUDA graphs)
  padded   torch.nn.TransformerEncoder fastpath on the padded batch
  nested   the same with enable_nested_tensor: padding is never computed
  hf       Hugging Face XLMRobertaModel, SDPA attention, padded batch

The two nn.TransformerEncoder modes hold the same weights and use the Hugging
Face embedding module for their input. Before timing, the CLS vector of every
system (and xlmr-infer's) is checked against the model in fp32 (cosine >=
--min-cosine); then each system is timed one whole-batch call at a time, with
the device synchronised around every call. Model FLOPs per second and their
share of the card's dense peak are reported for the engine.

  python3 scripts/compare_pytorch_cuda.py --build-dir build-gpu --json out.json
  python3 scripts/compare_pytorch_cuda.py --device cpu --size small --dtype f32   (a dry run)

Exit status: 0 done, 1 outputs disagree, 2 a tool or argument failed.
"""
import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_pytorch as cp  # noqa: E402  (tool helpers, workloads, tables)

PAD = cp.PAD
SIZES = {
    "large": dict(E=1024, H=16, F=4096, L=24),
    "base": dict(E=768, H=12, F=3072, L=12),
    "small": dict(E=256, H=4, F=1024, L=4),
}
MODES = ("padded", "nested", "hf")
LABELS = {"padded": "torch fastpath (padded)", "nested": "torch fastpath + nested", "hf": "HF SDPA (padded)"}
# Dense (no sparsity) tensor-core peaks in TFLOP/s for 16-bit inputs, from
# the vendors' data sheets; --peak-tflops overrides.
PEAKS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
         "A100": 312.0}
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def build_hf(dims, vocab, seed, attn):
    from transformers import XLMRobertaConfig, XLMRobertaModel

    cfg = XLMRobertaConfig(vocab_size=vocab, hidden_size=dims["E"], num_hidden_layers=dims["L"],
                           num_attention_heads=dims["H"], intermediate_size=dims["F"], hidden_act="gelu",
                           max_position_embeddings=cp.MAX_POSITIONS, type_vocab_size=1, layer_norm_eps=1e-5,
                           pad_token_id=PAD, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(seed)
    try:
        cfg._attn_implementation = attn
        model = XLMRobertaModel(cfg, add_pooling_layer=False)
    except (ValueError, ImportError, TypeError) as e:
        if attn == "eager":
            raise
        cp.note(f"attention '{attn}' not available in this transformers/torch ({str(e).splitlines()[0]}): eager")
        cfg._attn_implementation = "eager"
        model = XLMRobertaModel(cfg, add_pooling_layer=False)
    cp.perturb_vectors(model, seed + 1)
    return model.eval()


def attn_impl(hf):
    return getattr(hf.config, "_attn_implementation", "eager")


def build_torch_encoder(hf, dims):
    """nn.TransformerEncoder holding the Hugging Face model's layer weights."""
    E = dims["E"]
    layer = torch.nn.TransformerEncoderLayer(E, dims["H"], dims["F"], dropout=0.0, activation="gelu",
                                             layer_norm_eps=1e-5, batch_first=True, norm_first=False)
    enc = torch.nn.TransformerEncoder(layer, dims["L"], enable_nested_tensor=True)
    with torch.no_grad():
        for src, dst in zip(hf.encoder.layer, enc.layers):
            a = src.attention
            dst.self_attn.in_proj_weight.copy_(torch.cat([a.self.query.weight, a.self.key.weight,
                                                          a.self.value.weight]))
            dst.self_attn.in_proj_bias.copy_(torch.cat([a.self.query.bias, a.self.key.bias, a.self.value.bias]))
            dst.self_attn.out_proj.weight.copy_(a.output.dense.weight)
            dst.self_attn.out_proj.bias.copy_(a.output.dense.bias)
            dst.norm1.weight.copy_(a.output.LayerNorm.weight)
            dst.norm1.bias.copy_(a.output.LayerNorm.bias)
            dst.linear1.weight.copy_(src.intermediate.dense.weight)
            dst.linear1.bias.copy_(src.intermediate.dense.bias)
            dst.linear2.weight.copy_(src.output.dense.weight)
            dst.linear2.bias.copy_(src.output.dense.bias)
            dst.norm2.weight.copy_(src.output.LayerNorm.weight)
            dst.norm2.bias.copy_(src.output.LayerNorm.bias)
    return enc.eval()


class TorchEncoderRun:
    """HF embeddings, then nn.TransformerEncoder with the padding mask."""

    def __init__(self, hf, enc, nested):
        self.hf, self.enc, self.nested = hf, enc, nested

    def __call__(self, tok):
        self.enc.enable_nested_tensor = self.nested
        with torch.inference_mode():
            x = self.hf.embeddings(input_ids=tok)
            out = self.enc(x, src_key_padding_mask=tok == PAD)
            if out.is_nested:
                out = out.to_padded_tensor(0.0)
            return out[:, 0]


class HFRun:
    def __init__(self, hf):
        self.hf = hf

    def __call__(self, tok):
        with torch.inference_mode():
            return self.hf(input_ids=tok, attention_mask=(tok != PAD).long()).last_hidden_state[:, 0]


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_calls(fn, arg, device, warmup, iters, min_time):
    for _ in range(warmup):
        fn(arg)
    sync(device)
    times = []
    while len(times) < iters or sum(times) < min_time * 1e3:
        sync(device)
        t0 = time.perf_counter()
        fn(arg)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return cp.summarize(times)


def check_mode(mode, fn, tok):
    """Which native ops ran (a note, not an error: op names move between torch releases)."""
    with torch.autograd.profiler.profile() as prof:
        fn(tok)
    ops = {e.key for e in prof.key_averages()}
    layer = any("transformer_encoder_layer_fwd" in o for o in ops)
    nested = any("nested_tensor_from_mask" in o or "nested" in o for o in ops)
    if mode in ("padded", "nested") and not layer:
        return "the fused encoder-layer op did not run (fastpath not taken?)"
    if mode == "nested" and not nested:
        return "no nested-tensor op ran (sparsity not taken?)"
    if mode == "padded" and any("nested_tensor_from_mask" in o for o in ops):
        return "a nested tensor was built in the padded mode"
    return ""


def cosines(a, b):
    a, b = a.float(), b.float()
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def model_flops(dims, seqs):
    """Useful FLOPs of one encoder forward: GEMMs + attention (QK^T and PV), no padding."""
    E, F, L = dims["E"], dims["F"], dims["L"]
    n = sum(map(len, seqs))
    gemm = 2.0 * n * (4 * E * E + 2 * E * F)
    attn = 4.0 * sum(len(s) ** 2 for s in seqs) * E
    return L * (gemm + attn)


def card_peak(name, override):
    if override:
        return override
    for key, tf in PEAKS.items():
        if key.lower() in name.lower():
            return tf
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="large")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="compute type of every system")
    ap.add_argument("--tokenizer", default=cp.DEMO_TOKENIZER)
    ap.add_argument("--vocab", type=int, default=250002,
                    help="vocabulary rows (default: XLM-R's 250002; the demo tokenizer uses the first 1002)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workload", action="append", default=None,
                    help="xlmr-bench workload, repeatable (default: range:16-512:16384 uniform:128x1 lognormal:64)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--systems", default=",".join(MODES))
    ap.add_argument("--min-cosine", type=float, default=0.999,
                    help="smallest CLS-vector cosine against the fp32 model accepted")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's dense 16-bit peak (default: known cards)")
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in MODES:
            ap.error(f"--systems: unknown '{s}'")
    if args.device == "cuda" and args.dtype == "f32":
        ap.error("--device cuda runs the engine in bf16 or f16")
    build_dir = args.build_dir if os.path.isabs(args.build_dir) else os.path.join(os.getcwd(), args.build_dir)
    if not os.path.isdir(build_dir):
        build_dir = os.path.join(cp.REPO, args.build_dir)
    warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage.*")
    tmp = tempfile.mkdtemp(prefix="xlmr-compare-cuda-")
    try:
        return run(args, systems, build_dir, tmp)
    except cp.ToolError as e:
        print("error: " + str(e), file=sys.stderr)
        return 2
    finally:
        if args.keep:
            cp.log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args, systems, build_dir, tmp):
    import transformers

    dims = SIZES[args.size]
    dev, dtype = args.device, DTYPES[args.dtype]
    vocab = args.vocab
    specs = args.workload or ["range:16-512:16384", "uniform:128x1", "lognormal:64"]
    convert = cp.find_tool(build_dir, "xlmr-convert")
    infer = cp.find_tool(build_dir, "xlmr-infer")
    bench = cp.find_tool(build_dir, "xlmr-bench")
    card = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
    cp.log(f"model: random XLM-R {args.size} {dims}, vocab {vocab}; {card}; {args.dtype}; torch {torch.__version__}, "
           f"transformers {transformers.__version__}")

    # 1. The model, saved as a Hugging Face folder and converted.
    hf32 = build_hf(dims, vocab, args.seed, "sdpa")
    folder = os.path.join(tmp, "hf")
    hf32.save_pretrained(folder, safe_serialization=True)
    shutil.copy(args.tokenizer, os.path.join(folder, "sentencepiece.bpe.model"))
    xlmr = os.path.join(tmp, "model.xlmr")
    engine_dtype = "f32" if args.dtype == "f32" else args.dtype
    cp.run_tool([convert, folder, xlmr, "--dtype", engine_dtype, "-q"], "xlmr-convert")

    # 2. The engine's workloads.
    wpath = os.path.join(tmp, "workloads.json")
    cp.run_tool([bench, "--model", xlmr, "--device", dev, "--dump-workload", wpath, "--path", "fused",
                 "--layout", "ragged", "--dtype", engine_dtype, "--warmup", "0", "--iters", "1", "--min-time", "0",
                 "--quiet"] + cp.workload_args(specs), "xlmr-bench --dump-workload")
    workloads = cp.load_dumped(wpath)
    for w in workloads:
        w["n_seqs"], w["n_tokens"] = len(w["seqs"]), sum(map(len, w["seqs"]))
        w["max_len"] = max(map(len, w["seqs"]))
        w["padded_tokens"] = w["n_seqs"] * w["max_len"]
        w["tok"] = cp.pad_batch(w["seqs"]).to(dev)

    # 3. The PyTorch systems, in the compute dtype on the device.
    hf32 = hf32.to(dev)
    hf = copy.deepcopy(hf32).to(dtype)
    runners, notes = {}, []
    if any(m in systems for m in ("padded", "nested")):
        enc = build_torch_encoder(hf, dims).to(dev, dtype)
        for m in ("padded", "nested"):
            if m in systems:
                runners[m] = TorchEncoderRun(hf, enc, nested=m == "nested")
    if "hf" in systems:
        runners["hf"] = HFRun(hf)
        LABELS["hf"] = f"HF {attn_impl(hf)} (padded)"

    # 4. Outputs: CLS vectors against the fp32 model.
    cp.log(f"\nchecking CLS vectors against the fp32 model (min cosine, accepted >= {args.min_cosine})")
    ref = {w["name"]: HFRun(hf32)(w["tok"]).float() for w in workloads}
    failures, accuracy = [], {}
    ids_path = os.path.join(tmp, "ids.txt")
    with open(ids_path, "w") as f:
        for w in workloads:
            for s in w["seqs"]:
                f.write(" ".join(map(str, s)) + "\n")
    out_path = os.path.join(tmp, "infer.jsonl")
    cp.run_tool([infer, "--model", xlmr, "--device", dev, "--dtype", engine_dtype, "--input-format", "ids",
                 "--pooling", "cls", "-o", out_path, ids_path], "xlmr-infer")
    eng = cp.read_infer_rows(out_path, sum(w["n_seqs"] for w in workloads), "embedding")
    c = cosines(eng, torch.cat([ref[w["name"]].cpu() for w in workloads])).min().item()
    accuracy["engine"] = c
    cp.log(f"  {'xlmr-infer':28s} {c:.6f}")
    if not c >= args.min_cosine:
        failures.append(f"xlmr-infer: {c:.6f}")
    for mode, fn in runners.items():
        worst = 1.0
        for w in workloads:
            worst = min(worst, cosines(fn(w["tok"]), ref[w["name"]]).min().item())
            problem = check_mode(mode, fn, w["tok"])
            if problem:
                msg = f"{LABELS[mode]} on '{w['name']}': {problem}"
                if msg not in notes:
                    notes.append(msg)
                    cp.note(msg)
        accuracy[mode] = worst
        cp.log(f"  {LABELS[mode]:28s} {worst:.6f}")
        if not worst >= args.min_cosine:
            failures.append(f"{LABELS[mode]}: {worst:.6f}")
    if failures:
        print("error: outputs disagree: " + "; ".join(failures), file=sys.stderr)
        return 1
    del hf32, ref
    if dev == "cuda":
        torch.cuda.empty_cache()

    # 5. Timing: PyTorch, then the engine (xlmr-bench, same workloads).
    cp.log(f"\ntiming: {args.warmup} warm-up + at least {args.iters} calls and {args.min_time:g} s each")
    results = []
    for w in workloads:
        r = {k: w[k] for k in ("name", "n_seqs", "n_tokens", "max_len", "padded_tokens")}
        r["systems"], r["ratios"] = {}, {}
        for mode, fn in runners.items():
            lat = time_calls(fn, w["tok"], dev, args.warmup, args.iters, args.min_time)
            r["systems"][mode] = {"latency_ms": lat, "tokens_per_s": w["n_tokens"] / (lat["p50"] / 1e3)}
            cp.log(f"  {w['name']:20s} {LABELS[mode]:26s} p50 {cp.fmt_ms(lat['p50']):>9s} ms")
        results.append(r)
    bench_json = os.path.join(tmp, "bench.json")
    cp.run_tool([bench, "--model", xlmr, "--device", dev, "--path", "fused", "--layout", "ragged", "--dtype",
                 engine_dtype, "--iters", str(args.iters), "--warmup", str(args.warmup), "--min-time",
                 str(args.min_time), "--json", bench_json, "--quiet"] + cp.workload_args(specs), "xlmr-bench")
    with open(bench_json) as f:
        report = json.load(f)
    key = f"engine fused/ragged/{engine_dtype}"
    nums = cp.engine_numbers(report, ("fused", "ragged", engine_dtype), workloads)
    peak = card_peak(card, args.peak_tflops) if dev == "cuda" else args.peak_tflops
    for r, w in zip(results, workloads):
        if r["name"] not in nums:
            continue
        e = nums[r["name"]]
        p50 = e["latency_ms"]["p50"]
        e["tokens_per_s"] = r["n_tokens"] / (p50 / 1e3)
        e["model_tflops"] = model_flops(dims, w["seqs"]) / (p50 / 1e3) / 1e12
        e["fraction_of_peak"] = e["model_tflops"] / peak if peak else None
        r["systems"][key] = e
        for mode in MODES:
            if mode in r["systems"]:
                r["ratios"][mode] = e["tokens_per_s"] / r["systems"][mode]["tokens_per_s"]
        share = f" = {100 * e['fraction_of_peak']:.0f}% of {peak:g}" if e["fraction_of_peak"] else ""
        cp.log(f"  {r['name']:20s} {'xlmr-engine':26s} p50 {cp.fmt_ms(p50):>9s} ms   "
               f"{e['model_tflops']:.1f} model TFLOP/s{share}")

    # 6. Tables.
    cp.LABELS.update(LABELS)
    cp.LABELS[key] = "xlmr-engine"
    saved = cp.RATIO_ORDER
    cp.RATIO_ORDER = ("nested", "padded", "hf")
    try:
        thr, lat = cp.tables(results, [key] + list(runners), key, args.markdown)
    finally:
        cp.RATIO_ORDER = saved
    cp.log(f"\nXLM-R {args.size}, {card}, {args.dtype}: tokens/s = real tokens / median whole-batch latency\n")
    cp.log(thr)
    cp.log("")
    cp.log(lat)
    for n in notes:
        cp.log("note: " + n)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": {"size": args.size, **dims, "vocab": vocab}, "device": dev, "card": card,
                       "dtype": args.dtype, "peak_tflops": peak,
                       "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                       "hf_attention": attn_impl(hf), "min_cosine": accuracy, "engine_report": report,
                       "workloads": [{k: v for k, v in r.items()} for r in results], "notes": notes}, f, indent=1)
        cp.log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
