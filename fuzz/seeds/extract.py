#!/usr/bin/env python3
"""Writes fuzz/seeds/matrix/: the matrices/*.yaml files and the YAML
strings of matrix/src/tests.rs (scenario bodies get the tests' HEAD).

Run from the repository root: python3 fuzz/seeds/extract.py
"""
import hashlib
import pathlib
import re

root = pathlib.Path(__file__).resolve().parents[2]
out = root / "fuzz" / "seeds" / "matrix"
out.mkdir(parents=True, exist_ok=True)

def unescape(body: str) -> str:
    body = re.sub(r"\\\n\s*", "", body)  # line continuation
    return (body.replace(r"\n", "\n").replace(r"\t", "\t")
            .replace(r"\"", '"').replace(r"\\", "\\"))

src = (root / "matrix/src/tests.rs").read_text()
literals = [unescape(m.group(1))
            for m in re.finditer(r'(?<![\w\'])"((?:[^"\\]|\\.)*)"', src, re.S)]
head = next(s for s in literals if s.startswith("name: t\nmodels:"))
seeds = {p.name: p.read_text() for p in sorted((root / "matrices").glob("*.yaml"))}
for s in literals:
    if "{{" in s:  # a format! string
        s = s.replace("{{", "{").replace("}}", "}")
    if s.lstrip().startswith("- name:"):
        s = head + s
    if ":" not in s or len(s) < 12:
        continue
    name = "tests-" + hashlib.sha1(s.encode()).hexdigest()[:10] + ".yaml"
    seeds[name] = s
for name, text in seeds.items():
    (out / name).write_text(text)
print(f"{len(seeds)} seeds in {out}")
