"""ggufedit.py: a GGUF file as editable pieces, for tests that need files llama.cpp's tools
(or a broken writer) would produce: drop or replace keys, rename, retype or move tensors,
and serialise again. Metadata records are kept as raw bytes, so every value type survives.
"""

import struct

import gguf


def gguf_string(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


class Parts:
    """A GGUF file as editable pieces: raw kv records and tensor (name, type, ne, data)."""

    def __init__(self, path):
        r = gguf.GGUFReader(path)
        self.kvs = {name: b"".join(p.tobytes() for p in f.parts)
                    for name, f in r.fields.items() if not name.startswith("GGUF.")}
        self.tensors = [[t.name, int(t.tensor_type), [int(x) for x in t.field.parts[3]], bytes(t.data.tobytes())]
                        for t in r.tensors]
        self.offsets = None  # per-tensor override of the data offset

    def set_str(self, key, value):
        self.kvs[key] = gguf_string(key) + struct.pack("<I", 8) + gguf_string(value)

    def set_u32(self, key, value):
        self.kvs[key] = gguf_string(key) + struct.pack("<II", 4, value)

    def bytes(self, magic=b"GGUF", version=3, align=32) -> bytes:
        """The file; ``align`` pads the data section and each tensor (set general.alignment
        to the same value for a consistent file)."""
        out = bytearray(magic + struct.pack("<IQQ", version, len(self.tensors), len(self.kvs)))
        for blob in self.kvs.values():
            out += blob
        offset, offsets = 0, []
        for name, typ, ne, data in self.tensors:
            offsets.append(offset)
            offset += (len(data) + align - 1) // align * align
        for i, (name, typ, ne, data) in enumerate(self.tensors):
            off = self.offsets[i] if self.offsets and i in self.offsets else offsets[i]
            out += gguf_string(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
            out += struct.pack("<IQ", typ, off)
        out += b"\0" * (-len(out) % align)
        for name, typ, ne, data in self.tensors:
            out += data + b"\0" * (-len(data) % align)
        return bytes(out)

    def tensor(self, name):
        return next(t for t in self.tensors if t[0] == name)

    def write(self, path, **kw):
        with open(path, "wb") as f:
            f.write(self.bytes(**kw))
        return path
