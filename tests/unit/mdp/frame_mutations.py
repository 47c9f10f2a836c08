"""Hypothesis helper shared by the codec property tests: real encodings, damaged.

``mutate`` applies up to three edits to a frame list — drop a frame, insert one, replace one,
prepend a REQ-style empty delimiter, or truncate — so the decoders see near-valid input, where
bugs live, not only random noise.
"""

from __future__ import annotations

from hypothesis import strategies as st


def mutate(draw: st.DrawFn, frames: list[bytes], frame: st.SearchStrategy[bytes]) -> list[bytes]:
    """``frames`` after 0-3 random edits, each drawing new frames from ``frame``."""
    frames = list(frames)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.integers(0, 4))
        i = draw(st.integers(0, len(frames)))
        if op == 0 and frames:
            del frames[min(i, len(frames) - 1)]
        elif op == 1:
            frames.insert(i, draw(frame))
        elif op == 2 and frames:
            frames[min(i, len(frames) - 1)] = draw(frame)
        elif op == 3:
            frames.insert(0, b"")  # REQ-style delimiter
        elif frames:
            frames = frames[: draw(st.integers(0, len(frames)))]
    return frames
