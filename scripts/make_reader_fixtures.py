#!/usr/bin/env python3
"""Writes the small checkpoint files used by tests/test_readers.cpp.

Run with an interpreter that has torch and safetensors, e.g.
    /opt/xlmr-fixtures-venv/bin/python scripts/make_reader_fixtures.py

Output (tests/fixtures/readers/):
  valid files   state_zip.pt, state_proto4.pt, nested_zip.pt, nested_legacy.pt,
                model.safetensors, handmade.safetensors, handmade_zip.pt
  expected.json tensors (name, dtype, shape, values) and metadata for each valid file
  hostile files evil_*.pt, bad_*.pt, truncated_*, st_*.safetensors: each must be
                rejected with a clear error.
The output is deterministic: fixed seeds, fixed zip timestamps, and the legacy
file's storage keys (memory addresses) renamed to fixed ones.
"""

import argparse
import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "readers")

DTYPE_NAMES = {
    torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
    torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8",
    torch.uint8: "u8", torch.bool: "bool",
}


def describe(name, t):
    t = t.detach()
    if t.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        values = [float(v) for v in t.double().reshape(-1).tolist()]
    else:
        values = [int(v) for v in t.long().reshape(-1).tolist()]
    return {"name": name, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "values": values}


def state_dict():
    g = torch.Generator().manual_seed(1234)
    emb = torch.randn(5, 4, generator=g)
    sd = collections.OrderedDict()
    sd["emb.weight"] = emb
    sd["emb.weight_t"] = emb.t()              # non-contiguous view of the same storage
    sd["tied.weight"] = emb                   # the very same tensor again (tied weights)
    sd["emb.row2"] = emb[2]                   # view with a storage offset
    sd["emb.cols"] = emb[1:4, 1:3]            # strided view with an offset
    sd["half"] = torch.randn(3, generator=g).half()
    sd["bf"] = torch.randn(2, 3, generator=g).bfloat16()
    sd["position_ids"] = torch.arange(6).reshape(1, 6)
    sd["param"] = torch.nn.Parameter(torch.tensor([1.5, -2.0, 0.25]))
    sd["scalar"] = torch.tensor(3.0)
    sd["empty"] = torch.zeros(0, 4)
    sd["misc.f64"] = torch.tensor([1.0 / 3.0, -7.5], dtype=torch.float64)
    sd["misc.i32"] = torch.tensor([-5, 7], dtype=torch.int32)
    sd["misc.i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["misc.i8"] = torch.tensor([-3, 4], dtype=torch.int8)
    sd["misc.u8"] = torch.tensor([0, 255], dtype=torch.uint8)
    sd["misc.bool"] = torch.tensor([True, False, True])
    return sd


def small_state_dict():
    g = torch.Generator().manual_seed(99)
    sd = collections.OrderedDict()
    sd["encoder.sentence_encoder.embed_tokens.weight"] = torch.randn(4, 3, generator=g)
    sd["encoder.sentence_encoder.layers.0.fc1.weight"] = torch.randn(2, 3, generator=g).half()
    sd["encoder.sentence_encoder.layers.0.fc1.bias"] = torch.zeros(2).half()
    return sd


def nested(sd):
    args = argparse.Namespace(arch="roberta_base", lr=[0.0001], layers=2, fp16=True, nothing=None,
                              dropout=0.1)
    return {"args": args, "model": sd, "extra_state": {"epoch": 3, 7: "seven"}, "optimizer_history": []}


def write_zip(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, data)


def torch_zip(path, obj, **kw):
    torch.save(obj, path, **kw)


ELEMENT_SIZES = {"FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "DoubleStorage": 8,
                 "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1,
                 "ByteStorage": 1, "BoolStorage": 1}


class _KeyScanner(pickle.Unpickler):
    """Records the storage keys of a legacy object pickle (in order of first
    use) and their element sizes; builds nothing real."""

    def __init__(self, f):
        super().__init__(f)
        self.keys = {}

    def find_class(self, module, name):
        if module == "torch" and name in ELEMENT_SIZES:
            return name
        if (module, name) == ("argparse", "Namespace"):
            return argparse.Namespace
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        return lambda *a, **k: None

    def persistent_load(self, pid):
        self.keys.setdefault(pid[2], ELEMENT_SIZES[pid[1]])
        return None


def _pickle_end(data, start):
    import pickletools
    f = io.BytesIO(data)
    f.seek(start)
    for _op, _arg, _pos in pickletools.genops(f):
        pass
    return f.tell()


def legacy(path, obj):
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    # The storage keys are memory addresses and the storages are written in
    # their sorted order. Rename them by first use and rewrite the storage
    # section in that order, so the file is reproducible.
    ends = [0]
    for _ in range(5):  # magic, protocol version, system info, the object, the key list
        ends.append(_pickle_end(data, ends[-1]))
    scanner = _KeyScanner(io.BytesIO(data[ends[3]:ends[4]]))
    scanner.load()
    old_keys = pickle.loads(data[ends[4]:ends[5]])
    blobs = {}
    pos = ends[5]
    for k in old_keys:
        count = struct.unpack("<Q", data[pos:pos + 8])[0]
        size = 8 + count * scanner.keys[k]
        blobs[k] = data[pos:pos + size]
        pos += size
    assert pos == len(data)
    rename = {k: str(i) for i, k in enumerate(scanner.keys)}
    obj_pkl = data[ends[3]:ends[4]]
    for k, new in rename.items():
        obj_pkl = obj_pkl.replace(b"X" + struct.pack("<I", len(k)) + k.encode(),
                                  b"X" + struct.pack("<I", len(new)) + new.encode())
    out = data[:ends[3]] + obj_pkl + pickle.dumps([rename[k] for k in scanner.keys], protocol=2)
    for k in scanner.keys:
        out += blobs[k]
    with open(path, "wb") as fh:
        fh.write(out)


# ---- helpers to produce pickles that reference torch globals without torch --

class _Storage:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def handmade_pickle(obj, protocol=2):
    buf = io.BytesIO()
    _Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def handmade_zip(path, obj, storages, byteorder=b"little", protocol=2):
    members = [("archive/data.pkl", handmade_pickle(obj, protocol))]
    if byteorder is not None:
        members.append(("archive/byteorder", byteorder))
    for key, data in storages.items():
        members.append(("archive/data/" + key, data))
    members.append(("archive/version", b"3\n"))
    write_zip(path, members)


def raw_pickle_zip(path, pkl):
    write_zip(path, [("archive/data.pkl", pkl), ("archive/version", b"3\n")])


def safetensors_raw(path, header, buffer, pad=0):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    h += b" " * pad
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + buffer)


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    p = lambda name: os.path.join(OUT, name)
    expected = {}

    sd = state_dict()
    torch_zip(p("state_zip.pt"), sd)
    expected["state_zip.pt"] = {"format": "torch-zip", "tensors": [describe(k, v) for k, v in sd.items()]}
    torch_zip(p("state_proto4.pt"), sd, pickle_protocol=4)
    expected["state_proto4.pt"] = {"format": "torch-zip",
                                   "tensors": [describe(k, v) for k, v in sd.items()]}

    small = small_state_dict()
    small_desc = [describe("model." + k, v) for k, v in small.items()]
    torch_zip(p("nested_zip.pt"), nested(small))
    expected["nested_zip.pt"] = {"format": "torch-zip", "tensors": small_desc}

    full = nested(sd)
    legacy(p("nested_legacy.pt"), full)
    expected["nested_legacy.pt"] = {"format": "torch-legacy",
                                    "tensors": [describe("model." + k, v) for k, v in sd.items()]}

    st = collections.OrderedDict()
    g = torch.Generator().manual_seed(7)
    st["a.weight"] = torch.randn(3, 2, generator=g)
    st["a.bias"] = torch.randn(3, generator=g).half()
    st["b"] = torch.randn(2, 2, generator=g).bfloat16()
    st["ids"] = torch.arange(4).reshape(1, 4)
    save_file(dict(st), p("model.safetensors"), metadata={"format": "pt"})
    with open(p("model.safetensors"), "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        order = [k for k in json.loads(fh.read(n)) if k != "__metadata__"]
    expected["model.safetensors"] = {"format": "safetensors",
                                     "tensors": [describe(k, st[k]) for k in order]}

    # Unaligned data, a zero-size tensor and a space-padded header.
    u8 = bytes([1, 2, 3])
    f32 = struct.pack("<2f", 0.5, -1.25)
    header = collections.OrderedDict()
    header["z.bytes"] = {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]}
    header["z.empty"] = {"dtype": "F32", "shape": [0, 5], "data_offsets": [3, 3]}
    header["z.float"] = {"dtype": "F32", "shape": [2], "data_offsets": [3, 11]}
    header["__metadata__"] = {"note": "unaligned"}
    safetensors_raw(p("handmade.safetensors"), header, u8 + f32, pad=5)
    expected["handmade.safetensors"] = {"format": "safetensors", "tensors": [
        {"name": "z.bytes", "dtype": "u8", "shape": [3], "values": [1, 2, 3]},
        {"name": "z.empty", "dtype": "f32", "shape": [0, 5], "values": []},
        {"name": "z.float", "dtype": "f32", "shape": [2], "values": [0.5, -1.25]},
    ]}

    # Protocol 4 pickle written by hand (STACK_GLOBAL, MEMOIZE, FRAME), one
    # storage shared by two tensors, the second a transposed view.
    s0 = _Storage(torch.FloatStorage, "0", 6)
    obj = collections.OrderedDict()
    obj["m"] = _Tensor(s0, 0, (2, 3), (3, 1))
    obj["mt"] = _Tensor(s0, 0, (3, 2), (1, 3))
    handmade_zip(p("handmade_zip.pt"), obj, {"0": struct.pack("<6f", 0, 1, 2, 3, 4, 5)}, protocol=4)
    expected["handmade_zip.pt"] = {"format": "torch-zip", "tensors": [
        {"name": "m", "dtype": "f32", "shape": [2, 3], "values": [0, 1, 2, 3, 4, 5]},
        {"name": "mt", "dtype": "f32", "shape": [3, 2], "values": [0, 3, 1, 4, 2, 5]},
    ]}

    # ---- hostile and corrupt inputs ------------------------------------------
    # GLOBAL os.system + REDUCE (never to be executed).
    raw_pickle_zip(p("evil_os_system.pt"),
                   b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.")
    # STACK_GLOBAL builtins.eval.
    raw_pickle_zip(p("evil_eval.pt"),
                   b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x041+1\x94\x85\x94R\x94.")
    # numpy globals are not allowed either.
    raw_pickle_zip(p("evil_numpy.pt"),
                   b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00.")
    # An opcode outside the supported set.
    raw_pickle_zip(p("bad_opcode.pt"), b"\x80\x02}q\x00\xfe.")
    # BINGET of a memo entry that was never stored.
    raw_pickle_zip(p("bad_memo.pt"), b"\x80\x02}q\x00h\x05.")
    # SETITEMS without a MARK.
    raw_pickle_zip(p("bad_nomark.pt"), b"\x80\x02}X\x01\x00\x00\x00aK\x01u.")
    # A tensor whose strides reach past its storage.
    s1 = _Storage(torch.FloatStorage, "0", 4)
    handmade_zip(p("bad_oob_stride.pt"), {"w": _Tensor(s1, 0, (3, 3), (3, 1))},
                 {"0": struct.pack("<4f", 1, 2, 3, 4)})
    # A storage record shorter than its persistent id says.
    s2 = _Storage(torch.FloatStorage, "0", 100)
    handmade_zip(p("bad_short_storage.pt"), {"w": _Tensor(s2, 0, (2,), (1,))}, {"0": b"\0" * 8})
    # A storage record that is missing.
    handmade_zip(p("bad_missing_storage.pt"), {"w": _Tensor(_Storage(torch.FloatStorage, "9", 1), 0, (1,), (1,))}, {})
    # Big-endian byte order record.
    handmade_zip(p("bad_bigendian.pt"), {"w": _Tensor(_Storage(torch.FloatStorage, "0", 1), 0, (1,), (1,))},
                 {"0": b"\0" * 4}, byteorder=b"big")
    # The root object is a tensor, not a state dict.
    handmade_zip(p("bad_single_tensor.pt"), _Tensor(_Storage(torch.FloatStorage, "0", 1), 0, (1,), (1,)),
                 {"0": b"\0" * 4})
    # A zip without data.pkl.
    write_zip(p("bad_no_datapkl.pt"), [("archive/version", b"3\n")])

    with open(p("state_zip.pt"), "rb") as fh:
        data = fh.read()
    with open(p("truncated_zip.pt"), "wb") as fh:
        fh.write(data[: len(data) // 2])
    with open(p("nested_legacy.pt"), "rb") as fh:
        data = fh.read()
    with open(p("truncated_legacy.pt"), "wb") as fh:
        fh.write(data[: len(data) - 20])
    with open(p("model.safetensors"), "rb") as fh:
        data = fh.read()
    with open(p("truncated.safetensors"), "wb") as fh:
        fh.write(data[: len(data) - 10])

    buf8 = struct.pack("<2f", 1.0, 2.0)
    safetensors_raw(p("st_overlap.safetensors"), {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
    }, buf8)
    safetensors_raw(p("st_gap.safetensors"), {
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
    }, buf8 + buf8[:4])
    safetensors_raw(p("st_bad_dtype.safetensors"), {
        "a": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]},
    }, buf8)
    safetensors_raw(p("st_bad_size.safetensors"), {
        "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]},
    }, buf8)
    safetensors_raw(p("st_duplicate.safetensors"),
                    b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                    b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', buf8)
    safetensors_raw(p("st_negative.safetensors"), {
        "a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]},
    }, buf8)
    h = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    with open(p("st_header_too_big.safetensors"), "wb") as fh:
        fh.write(struct.pack("<Q", len(h) + 100) + h + buf8)
    with open(p("st_not_json.safetensors"), "wb") as fh:
        fh.write(struct.pack("<Q", 6) + b"{nope}" + buf8)

    with open(p("expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1, sort_keys=True)
        fh.write("\n")
    total = sum(os.path.getsize(p(f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
