"""The monitor's state as explicit data: one NumPy archive holding a JSON tree and plain arrays.

A workspace's state file must never run code when read (a planted pickle would), so it is read
with `allow_pickle=False`, and the only objects it can rebuild are the monitor's own classes,
named in an allow-list: anything else in the file is refused with a clear error.

Encoding of the tree (JSON): scalars as themselves (non-finite floats tagged), lists as lists,
`{"t": [...]}` a tuple, `{"s": [...]}` a set, `{"d": [[key, value], ...]}` a dict (keys may be
tuples), `{"a": "a12"}` a NumPy array stored beside the tree, `{"o": "SeriesMonitor", "id": 3,
"v": {...}}` an object of an allowed class with its attributes, `{"r": 3}` that same object again.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linelab.errors import UserError

TREE = "__tree__"
FORMAT = 1
SEP = "\x1f"  # joins a text array into one buffer (unit separator; ids do not hold it)


class StateError(UserError):
    """A state file that is not the monitor's own (damaged, planted or from another version)."""


def _encode_array(a: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    key = f"a{len(arrays)}"
    if a.dtype != object:
        arrays[key] = a
        return {"a": key}
    flat = a.ravel()
    if all(v is None or isinstance(v, str) for v in flat):
        # Text with gaps (unit ids, labels): a unicode array and a mask of the gaps, no pickle.
        missing = np.fromiter((v is None for v in flat), dtype=bool, count=flat.size)
        strs = ["" if v is None else v for v in flat]
        joined = SEP.join(strs)
        arrays[key + "m"] = missing.reshape(a.shape)
        if joined.count(SEP) == max(len(strs) - 1, 0):  # one UTF-8 buffer: a byte a character, fast
            arrays[key] = np.frombuffer(joined.encode(), dtype=np.uint8)
            return {"a": key, "m": key + "m", "joined": list(a.shape)}
        arrays[key] = np.array(strs, dtype=str).reshape(a.shape)
        return {"a": key, "m": key + "m"}
    return {"ol": [_plain(v) for v in flat.tolist()], "shape": list(a.shape)}


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return {"f": repr(v)}
    if v is None or isinstance(v, bool | int | float | str):
        return v
    raise StateError(f"monitor state: cannot store a value of type {type(v).__name__} in an object array")


class _Encoder:
    def __init__(self, allowed: dict[str, type]) -> None:
        self.names = {cls: name for name, cls in allowed.items()}
        self.arrays: dict[str, np.ndarray] = {}
        self.seen: dict[int, int] = {}

    def encode(self, v: Any) -> Any:
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, int | np.integer) and not isinstance(v, np.bool_):
            return int(v)
        if isinstance(v, float | np.floating):
            f = float(v)
            return f if math.isfinite(f) else {"f": repr(f)}
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.ndarray):
            return _encode_array(v, self.arrays)
        if isinstance(v, list):
            return [self.encode(x) for x in v]
        if isinstance(v, tuple):
            return {"t": [self.encode(x) for x in v]}
        if isinstance(v, set | frozenset):
            return {"s": [self.encode(x) for x in sorted(v, key=repr)]}
        if isinstance(v, dict):
            return {"d": [[self.encode(k), self.encode(x)] for k, x in v.items()]}
        name = self.names.get(type(v))
        if name is None:
            raise StateError(f"monitor state: {type(v).__name__} is not one of the monitor's own classes")
        if id(v) in self.seen:
            return {"r": self.seen[id(v)]}
        ref = self.seen[id(v)] = len(self.seen)
        fields = ({f.name: getattr(v, f.name) for f in dataclasses.fields(v)} if dataclasses.is_dataclass(v)
                  else vars(v))
        return {"o": name, "id": ref, "v": self.encode(dict(fields))}


class _Decoder:
    def __init__(self, allowed: dict[str, type], arrays: Callable[[str], np.ndarray], origin: str) -> None:
        self.allowed, self.arrays, self.origin = allowed, arrays, origin
        self.objects: dict[int, Any] = {}

    def decode(self, v: Any) -> Any:
        if not isinstance(v, dict):
            return [self.decode(x) for x in v] if isinstance(v, list) else v
        if "f" in v:
            return float(v["f"])
        if "t" in v:
            return tuple(self.decode(x) for x in v["t"])
        if "s" in v:
            return {self.decode(x) for x in v["s"]}
        if "d" in v:
            return {self.decode(k): self.decode(x) for k, x in v["d"]}
        if "a" in v:
            a = self.arrays(v["a"])
            if "joined" in v:
                size = int(np.prod(v["joined"]))
                strs = a.tobytes().decode().split(SEP) if size else []
                a = np.array(strs, dtype=object).reshape(v["joined"])
            if "m" in v:
                out = a.astype(object)
                out[self.arrays(v["m"])] = None
                return out
            return a
        if "ol" in v:
            return np.array([self.decode(x) for x in v["ol"]], dtype=object).reshape(v["shape"])
        if "r" in v:
            return self.objects[v["r"]]
        if "o" in v:
            cls = self.allowed.get(v["o"])
            if cls is None:
                raise StateError(f"{self.origin}: names {v['o']!r}, which is not one of the monitor's own classes")
            obj: Any = object.__new__(cls)
            self.objects[v["id"]] = obj
            fields = self.decode(v["v"])
            if dataclasses.is_dataclass(cls):
                for k, x in fields.items():
                    object.__setattr__(obj, k, x)
            else:
                obj.__dict__.update(fields)
            return obj
        raise StateError(f"{self.origin}: an entry the monitor does not know ({sorted(v)})")


def save_state(obj: Any, path: Path, allowed: dict[str, type]) -> None:
    """Write `obj` atomically: a crash leaves the previous state as it was."""
    enc = _Encoder(allowed)
    tree = json.dumps({"format": FORMAT, "root": enc.encode(obj)}, separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    arrays: dict[str, Any] = {TREE: np.frombuffer(tree.encode(), dtype=np.uint8), **enc.arrays}
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def load_state(path: Path, allowed: dict[str, type]) -> Any:
    """Read a state written by `save_state`; never unpickles, never builds a class not allowed."""
    try:
        data = path.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise StateError(f"{path}: not a monitor state file ({exc})") from None
    if TREE not in arrays:
        raise StateError(f"{path}: not a monitor state file (no tree)")
    try:
        tree = json.loads(arrays.pop(TREE).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{path}: damaged monitor state ({exc})") from None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise StateError(f"{path}: a monitor state of another format")

    def array(key: str) -> np.ndarray:
        if key not in arrays:
            raise StateError(f"{path}: damaged monitor state (array {key} missing)")
        return arrays[key]

    return _Decoder(allowed, array, str(path)).decode(tree["root"])
