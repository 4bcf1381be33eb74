"""`make demo`: the store and a trainer end to end, on a fresh data dir and free ports.

Starts `metalearn gateway` (embedded PostgreSQL), stores the prototype's document,
imports a small ImageFolder of generated images and scikit-learn's handwritten digits,
starts `metalearn trainer` (which registers with the gateway), trains the LeNet example
on the digits through the gateway with a live line per epoch, tests it, lists what is
stored, and stops everything.
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
LENET = ROOT / "examples" / "digits_lenet.json"
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


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """A metalearn daemon on a free port; its address from the line it prints."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    print(line.strip(), flush=True)
    return proc, line.rsplit(" ", 1)[-1].strip()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="metalearn-demo-") as tmp:
        data_dir = Path(tmp) / "data"
        gateway, address = start("gateway", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir))
        trainer = None
        try:
            make_images(Path(tmp) / "images")
            run("attempts", "create", "--file", str(SEED), address=address)
            run("images", "import", str(Path(tmp) / "images"), "--progress", address=address)
            run("images", "labels", address=address)
            run("attempts", "list", address=address)
            run("attempts", "get", "american_dog_species_3", address=address)
            run("images", "import-digits", "--progress", address=address)
            trainer, trainer_address = start(
                "trainer", "--listen", "127.0.0.1:0", "--gateway", address,
                "--cache-dir", str(Path(tmp) / "cache"),
            )  # fmt: skip
            print(f"trainer {trainer_address} registered with the gateway", flush=True)
            run("train", "--file", str(LENET), "--name", "lenet", "--follow", address=address)
            run("test", "lenet", "--follow", address=address)
            run("attempts", "list", address=address)
        finally:
            if trainer is not None:
                trainer.terminate()
                trainer.wait(timeout=60)
            gateway.terminate()
            code = gateway.wait(timeout=30)
        print(f"\ntrainer and gateway stopped (exit {code}); the embedded PostgreSQL with them")
        return code


if __name__ == "__main__":
    sys.exit(main())
