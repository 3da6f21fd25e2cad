#!/usr/bin/env python3
"""Hostile and broken PyTorch checkpoints for the converter's refusal tests.

The pickles are written byte by byte (never produced by, or loaded with,
Python's pickle) and wrapped in the zip layout torch.save uses."""
import os
import zipfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hostile")

PICKLES = {
    # GLOBAL os.system, called through REDUCE
    "os_system.pt": b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.",
    # STACK_GLOBAL builtins.eval (protocol 4 style)
    "builtins_eval.pt": b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x031+1\x94\x85\x94R\x94.",
    # an opcode the reader does not allow (0xff)
    "unknown_opcode.pt": b"\x80\x02}\xff.",
    # truncated in the middle of a BINUNICODE
    "truncated_pickle.pt": b"\x80\x02}X\x10\x00\x00\x00abc",
}

os.makedirs(OUT, exist_ok=True)
for name, data in PICKLES.items():
    with zipfile.ZipFile(os.path.join(OUT, name), "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/version", "3\n")
