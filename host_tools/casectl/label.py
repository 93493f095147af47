"""A printable label for a case: the QR code of its app unlock link, with the case id under it.

SVG for print shops and label printers that take vectors; PNG (drawn here with a small bitmap
font, so no imaging library is needed) for everything else. segno makes the QR matrix.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import segno

DEFAULT_LINK = "{cloud}/app/unlock?case={case}"

_GLYPHS = {
    "0": ".###./#...#/#..##/#.#.#/##..#/#...#/.###.", "1": "..#../.##../..#../..#../..#../..#../.###.",
    "2": ".###./#...#/....#/...#./..#../.#.../#####", "3": "#####/...#./..#../...#./....#/#...#/.###.",
    "4": "...#./..##./.#.#./#..#./#####/...#./...#.", "5": "#####/#..../####./....#/....#/#...#/.###.",
    "6": "..##./.#.../#..../####./#...#/#...#/.###.", "7": "#####/....#/...#./..#../.#.../.#.../.#...",
    "8": ".###./#...#/#...#/.###./#...#/#...#/.###.", "9": ".###./#...#/#...#/.####/....#/...#./.##..",
    "a": "...../...../.###./....#/.####/#...#/.####", "b": "#..../#..../#.##./##..#/#...#/#...#/####.",
    "c": "...../...../.###./#..../#..../#...#/.###.", "d": "....#/....#/.##.#/#..##/#...#/#...#/.####",
    "e": "...../...../.###./#...#/#####/#..../.###.", "f": "..##./.#..#/.#.../###../.#.../.#.../.#...",
    "g": "...../.####/#...#/#...#/.####/....#/.###.", "h": "#..../#..../#.##./##..#/#...#/#...#/#...#",
    "i": "..#../...../.##../..#../..#../..#../.###.", "j": "...#./...../..##./...#./...#./#..#./.##..",
    "k": "#..../#..../#..#./#.#../##.../#.#../#..#.", "l": ".##../..#../..#../..#../..#../..#../.###.",
    "m": "...../...../##.#./#.#.#/#.#.#/#...#/#...#", "n": "...../...../#.##./##..#/#...#/#...#/#...#",
    "o": "...../...../.###./#...#/#...#/#...#/.###.", "p": "...../...../####./#...#/####./#..../#....",
    "q": "...../...../.##.#/#..##/.####/....#/....#", "r": "...../...../#.##./##..#/#..../#..../#....",
    "s": "...../...../.###./#..../.###./....#/####.", "t": ".#.../.#.../###../.#.../.#.../.#..#/..##.",
    "u": "...../...../#...#/#...#/#...#/#..##/.##.#", "v": "...../...../#...#/#...#/#...#/.#.#./..#..",
    "w": "...../...../#...#/#...#/#.#.#/#.#.#/.#.#.", "x": "...../...../#...#/.#.#./..#../.#.#./#...#",
    "y": "...../...../#...#/#...#/.####/....#/.###.", "z": "...../...../#####/...#./..#../.#.../#####",
    "-": "...../...../...../#####/...../...../.....", "_": "...../...../...../...../...../...../#####",
    ":": "...../.##../.##../...../.##../.##../.....", ".": "...../...../...../...../...../.##../.##..",
    "/": "...../....#/...#./..#../.#.../#..../.....", " ": "...../...../...../...../...../...../.....",
    "?": ".###./#...#/....#/...#./..#../...../..#..",
}
FONT = {c: [row == "#" for line in g.split("/") for row in line] for c, g in _GLYPHS.items()}


@dataclass
class Label:
    case: str
    store: str
    link: str
    png: Path
    svg: Path


def unlock_link(template: str, *, cloud: str, store: str, case: str) -> str:
    return template.format(cloud=cloud.rstrip("/"), store=store, case=case)


def _png(width: int, height: int, pixels: list[bytearray]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(row) for row in pixels)  # filter 0 on every row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _text_width(text: str, px: int) -> int:
    return len(text) * 6 * px - px


def _draw_text(pixels: list[bytearray], text: str, x0: int, y0: int, px: int) -> None:
    for i, ch in enumerate(text.lower()):
        bits = FONT.get(ch, FONT["?"])
        for k, on in enumerate(bits):
            if not on:
                continue
            gx, gy = x0 + (i * 6 + k % 5) * px, y0 + (k // 5) * px
            for yy in range(gy, gy + px):
                row = pixels[yy]
                for xx in range(gx, gx + px):
                    row[xx] = 0


def render_png(qr: segno.QRCode, case: str, store: str, module: int = 8) -> bytes:
    rows = [list(r) for r in qr.matrix_iter(scale=1, border=4)]
    q = len(rows) * module
    big, small = 4, 2
    lines = [(f"case {case}", big), (f"store {store}", small)]
    width = max(q, *(_text_width(t, s) + 8 * module for t, s in lines))
    height = q + sum(9 * s for _, s in lines) + 3 * module
    pixels = [bytearray(b"\xff" * width) for _ in range(height)]
    x_off = (width - q) // 2
    for y, r in enumerate(rows):
        for x, dark in enumerate(r):
            if dark:
                for yy in range(y * module, (y + 1) * module):
                    pixels[yy][x_off + x * module:x_off + (x + 1) * module] = b"\x00" * module
    y = q
    for text, s in lines:
        _draw_text(pixels, text, (width - _text_width(text, s)) // 2, y, s)
        y += 9 * s
    return _png(width, height, pixels)


def render_svg(qr: segno.QRCode, case: str, store: str, link: str, module: int = 8) -> str:
    rows = [list(r) for r in qr.matrix_iter(scale=1, border=4)]
    q = len(rows) * module
    width = max(q, 12 * len(link) // 2 + 4 * module, 24 * len(case) + 4 * module)
    x_off = (width - q) // 2
    path = []
    for y, r in enumerate(rows):
        x = 0
        while x < len(r):  # one rectangle per run of dark modules
            if r[x]:
                start = x
                while x < len(r) and r[x]:
                    x += 1
                path.append(f"M{x_off + start * module},{y * module}h{(x - start) * module}v{module}h-{(x - start) * module}z")
            else:
                x += 1
    height = q + 110
    mid = width // 2
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<rect width="100%" height="100%" fill="#fff"/>'
        f'<path fill="#000" d="{"".join(path)}"/>'
        f'<text x="{mid}" y="{q + 30}" text-anchor="middle" font-family="monospace" font-size="32" font-weight="bold">'
        f'{escape(case)}</text>'
        f'<text x="{mid}" y="{q + 62}" text-anchor="middle" font-family="monospace" font-size="18">store {escape(store)}</text>'
        f'<text x="{mid}" y="{q + 92}" text-anchor="middle" font-family="monospace" font-size="12">{escape(link)}</text>'
        "</svg>\n"
    )


def write_label(out_dir: Path, *, case: str, store: str, link: str) -> Label:
    out_dir.mkdir(parents=True, exist_ok=True)
    qr = segno.make(link, error="m", micro=False)
    png, svg = out_dir / f"{case}.png", out_dir / f"{case}.svg"
    png.write_bytes(render_png(qr, case, store))
    svg.write_text(render_svg(qr, case, store, link))
    return Label(case, store, link, png, svg)
