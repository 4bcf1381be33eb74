"""`make demo`: the attempt store end to end, on a fresh data dir and a free port.

Starts `metalearn gateway` (embedded PostgreSQL), stores the prototype's document,
imports a small ImageFolder of generated images, lists what is stored, and stops.
Training arrives with the trainer daemon; this shows the store it will write to.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "tests" / "fixtures" / "attempt_american_dog_species_3.json"
CLI = [sys.executable, "-m", "metalearn.cli"]


def make_images(folder: Path) -> None:
    """Three labels of 20 small drawings each: circles, squares and crosses."""
    rng = random.Random(0)
    for label in ("circle", "square", "cross"):
        (folder / label).mkdir(parents=True)
        for i in range(20):
            image = Image.new("RGB", (32, 32), (rng.randrange(256),) * 3)
            draw = ImageDraw.Draw(image)
            x, y, r = rng.randrange(8, 24), rng.randrange(8, 24), rng.randrange(4, 8)
            if label == "circle":
                draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 0, 0))
            elif label == "square":
                draw.rectangle((x - r, y - r, x + r, y + r), fill=(0, 255, 0))
            else:
                draw.line((x - r, y, x + r, y), fill=(0, 0, 255), width=2)
                draw.line((x, y - r, x, y + r), fill=(0, 0, 255), width=2)
            image.save(folder / label / f"{i}.png")


def run(*args: str, address: str) -> None:
    print(f"\n$ metalearn {' '.join(args)}", flush=True)
    subprocess.run([*CLI, *args, "--gateway", address], check=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="metalearn-demo-") as tmp:
        data_dir = Path(tmp) / "data"
        gateway = subprocess.Popen(
            [*CLI, "gateway", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert gateway.stdout is not None
            line = gateway.stdout.readline()
            print(line.strip())
            address = line.rsplit(" ", 1)[-1].strip()
            make_images(Path(tmp) / "images")
            run("attempts", "create", "--file", str(SEED), address=address)
            run("images", "import", str(Path(tmp) / "images"), "--progress", address=address)
            run("images", "labels", address=address)
            run("attempts", "list", address=address)
            run("attempts", "get", "american_dog_species_3", address=address)
        finally:
            gateway.terminate()
            code = gateway.wait(timeout=30)
        print(f"\ngateway stopped (exit {code}); the embedded PostgreSQL stopped with it")
        return code


if __name__ == "__main__":
    sys.exit(main())
