"""Screenshots of the web page answering questions, in headless Chromium (the assignment's video).

    python scripts/screenshots.py --model demo_out/run --index demo_out/prepared --out docs/img

Starts `amazon-sft serve`'s app on a local port, asks each question through the page, and saves
one PNG per answer. Needs Debian's chromium (apt-get install chromium) and playwright (pip).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.answering.ask import Answerer
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.answering.serve import BROWSER_FLAGS, BackgroundServer, create_app
from amazon_sft.evaluation.loading import load_for_eval, pick_device
from amazon_sft.prompts import build_prompt_format


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="training out_dir or config:NAME")
    ap.add_argument("--index", required=True, help="prepared folder")
    ap.add_argument("--out", default="docs/img")
    ap.add_argument(
        "--questions", nargs="*", default=None, help="default: three seen titles, EN and PT"
    )
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Debian's chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    model, tok, cfg, _ = load_for_eval(args.model, [], pick_device())
    answerer = Answerer(
        model, tok, build_prompt_format(tok, cfg.data), CatalogueIndex(args.index), cfg.data
    )
    titles = [
        json.loads(x)["title"]
        for x in (Path(args.index) / "seen_probe.jsonl").read_text().splitlines()[:3]
    ]
    questions = args.questions or [
        f'What is the description of the product "{titles[0]}"?',
        f"Me fale sobre {titles[1]}",
        f"Tell me about {titles[2]}",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with BackgroundServer(create_app(answerer, 96), args.port) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        for i, question in enumerate(questions, start=1):
            page.goto(url)
            page.fill("#q", question)
            page.click("#ask")
            page.wait_for_selector("#sources li", timeout=300_000)
            page.wait_for_function("!document.getElementById('ask').disabled", timeout=300_000)
            path = out / f"answer-{i}.png"
            page.screenshot(path=str(path))
            print(f"{path}: {question}")
        browser.close()


if __name__ == "__main__":
    main()
