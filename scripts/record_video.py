"""A video of the tuned model answering users' questions on the real page (the assignment's third
deliverable), recorded in headless Chromium and stitched with Debian's ffmpeg.

    python scripts/record_video.py --model demo_out/run --index demo_out/prepared \
        --out docs/video/answers.mp4

Starts `amazon-sft serve`'s app on a local port, types each question (English and Portuguese, a
taught product and a held-out one by default) into the page, and screenshots the page while the
answer streams in and its sources and citation appear. Each frame is shown for as long as it was
on screen (ffmpeg's concat demuxer with per-frame durations), so the video plays at the model's
real speed; `--max-seconds` caps its length. Needs Debian's chromium and ffmpeg (apt-get install
chromium ffmpeg) and playwright (pip; it drives the system Chromium, nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.answering.ask import Answerer
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.answering.serve import BROWSER_FLAGS, create_app
from amazon_sft.answering.serve_socket import BackgroundServer
from amazon_sft.evaluation.loading import load_for_eval, pick_device
from amazon_sft.prompts import build_prompt_format

FRAME_S = 0.25
HOLD_S = 2.5  # the finished answer and its sources stay on screen this long


def default_questions(index: Path) -> list[str]:
    def first(name: str) -> str:
        with open(index / f"{name}.jsonl") as fh:
            return json.loads(fh.readline())["title"]

    return [f"Tell me about {first('seen_probe')}", f"Me fale sobre {first('heldout')}"]


def record(page, question: str, mode, frames: Path, shots: list, deadline: float) -> None:
    def shot() -> None:
        path = frames / f"frame-{len(shots):05d}.png"
        page.screenshot(path=str(path))
        shots.append((path, time.perf_counter()))

    if mode:
        page.select_option("#mode", mode)
    page.fill("#q", "")
    for n in range(0, len(question) + 1, 4):  # typed, a few characters a frame
        page.fill("#q", question[:n])
        shot()
    page.fill("#q", question)
    page.click("#ask")
    while time.perf_counter() < deadline:
        shot()
        if page.evaluate("!document.getElementById('ask').disabled"):
            break
        time.sleep(FRAME_S)
    end = time.perf_counter() + HOLD_S
    while time.perf_counter() < min(end, deadline):
        shot()
        time.sleep(FRAME_S)


def partial_video(out: Path) -> Path:
    """Where this process encodes ``out`` before renaming it into place."""
    return out.with_name(f".{out.name}.{os.getpid()}.partial.mp4")


def stitch(shots: list, out: Path, tmp: Path) -> None:
    """Frames to H.264 with each frame's real duration, encoded beside ``out`` under a hidden
    name and renamed into place: a kill mid-encoding leaves no half video at ``out``."""
    listing = tmp / "frames.txt"
    partial = partial_video(out)
    lines = []
    for (path, at), (_, after) in zip(shots, [*shots[1:], (None, shots[-1][1] + FRAME_S)]):
        lines += [f"file '{path}'", f"duration {max(after - at, 0.04):.3f}"]
    lines.append(f"file '{shots[-1][0]}'")  # the concat demuxer drops the last duration otherwise
    listing.write_text("\n".join(lines) + "\n")
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-vf",
            "fps=10,format=yuv420p",
            "-c:v",
            "libx264",
            "-crf",
            "30",
            "-movflags",
            "+faststart",
            str(partial),
        ],
        check=True,
    )
    os.replace(partial, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="training out_dir or config:NAME")
    ap.add_argument("--index", required=True, help="prepared folder")
    ap.add_argument("--out", default="docs/video/answers.mp4")
    ap.add_argument("--questions", nargs="*", default=None, help="default: EN + PT, see above")
    ap.add_argument(
        "--mode", choices=("grounded", "closed"), default=None, help="default: the model's"
    )
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--port", type=int, default=8766)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = ap.parse_args()
    out = Path(args.out)
    if out.is_dir():
        raise SystemExit(f"record_video: --out {out} is a folder: name the video file, e.g. x.mp4")
    if out.exists() and not args.overwrite:
        raise SystemExit(
            f"record_video: --out {out} exists: name a new file, or pass --overwrite to replace it"
        )
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or shutil.which("ffmpeg") is None:
        raise SystemExit("needs Debian's chromium and ffmpeg: apt-get install chromium ffmpeg")
    from playwright.sync_api import sync_playwright

    model, tok, cfg, _ = load_for_eval(args.model, [], pick_device())
    answerer = Answerer(
        model, tok, build_prompt_format(tok, cfg.data), CatalogueIndex(args.index), cfg.data
    )
    questions = args.questions or default_questions(Path(args.index))
    out.parent.mkdir(parents=True, exist_ok=True)
    app = create_app(answerer, args.max_new_tokens)
    with (
        tempfile.TemporaryDirectory() as tmp,
        BackgroundServer(app, args.port) as url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 960, "height": 1080})
        page.goto(url)
        shots: list = []
        deadline = time.perf_counter() + args.max_seconds
        for question in questions:
            if time.perf_counter() >= deadline:
                print(f"skipped (over --max-seconds): {question}")
                continue
            page.goto(url)
            record(page, question, args.mode, Path(tmp), shots, deadline)
            print(f"recorded: {question}")
        browser.close()
        try:
            stitch(shots, out, Path(tmp))
        finally:
            partial_video(out).unlink(missing_ok=True)
    seconds = shots[-1][1] - shots[0][1] + FRAME_S
    print(f"{out}: {len(shots)} frames, {seconds:.0f} s")


if __name__ == "__main__":
    main()
