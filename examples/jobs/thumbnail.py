"""The job pool's consumer: make a thumbnail in steps, reporting progress after each.

The "image" is generated from the job's name (interfering waves, 256x256 grey levels), so the
example needs no files and no imaging library; the thumbnail is its 32x32 box average. Each
step computes a band of rows and sends a progress update to the group of the client that asked
(``message["group"]``); the last one carries the thumbnail.

``JOBS_STEP_SECONDS`` (default 0.3) paces the steps so that progress is visible in a browser;
a real job spends that time working.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
from typing import Any

from towpath.layers import get_channel_layer

SOURCE_SIZE = 256
THUMB_SIZE = 32
BLOCK = SOURCE_SIZE // THUMB_SIZE
STEPS = 8
ROWS_PER_STEP = THUMB_SIZE // STEPS

Message = dict[str, Any]


def _waves(name: str) -> list[tuple[float, float, float]]:
    """Three (x frequency, y frequency, phase) triples drawn from the name."""
    digest = hashlib.sha256(name.encode()).digest()
    return [
        (0.01 + digest[i] / 255 * 0.08, 0.01 + digest[i + 1] / 255 * 0.08, digest[i + 2] / 40)
        for i in (0, 3, 6)
    ]


def thumbnail_rows(name: str, first: int, count: int) -> list[int]:
    """Rows ``first`` to ``first + count`` of the thumbnail, as grey levels 0-255."""
    waves = _waves(name)
    pixels = []
    for thumb_y in range(first, first + count):
        for thumb_x in range(THUMB_SIZE):
            total = 0.0
            for y in range(thumb_y * BLOCK, (thumb_y + 1) * BLOCK):
                for x in range(thumb_x * BLOCK, (thumb_x + 1) * BLOCK):
                    total += sum(math.sin(fx * x + fy * y + p) for fx, fy, p in waves)
            mean = total / (BLOCK * BLOCK * len(waves))  # in [-1, 1]
            pixels.append(round((mean + 1) * 127.5))
    return pixels


async def make_thumbnail(message: Message) -> None:
    """``thumbnail`` channel: ``{"job", "name", "group"}`` -> progress updates to ``group``."""
    layer = get_channel_layer()
    pause = float(os.environ.get("JOBS_STEP_SECONDS", "0.3"))
    job, name, group = message["job"], message["name"], message["group"]
    pixels: list[int] = []
    for step in range(STEPS):
        # CPU work in a thread: the worker's loop stays free for its other jobs and heartbeats
        pixels += await asyncio.to_thread(thumbnail_rows, name, step * ROWS_PER_STEP, ROWS_PER_STEP)
        update: dict[str, Any] = {
            "type": "progress",
            "job": job,
            "percent": (step + 1) * 100 // STEPS,
            "worker": os.getpid(),  # which process of the job pool did it
        }
        if step == STEPS - 1:
            update |= {"type": "done", "width": THUMB_SIZE, "height": THUMB_SIZE, "pixels": pixels}
        await layer.group_send(group, {"type": "job.update", "update": update})
        if step < STEPS - 1:
            await asyncio.sleep(pause)
