"""A picture of `dvc plots show` as a user sees it in a browser, for the README and the notes.

    python benchmarks/dvc_plots_screenshot.py --repo . --vega-dir VEGA --out reports/figures/dvc_plots.png

`dvc plots show` writes an HTML page whose charts are drawn by vega, vega-lite and vega-embed
loaded from a CDN. A machine without internet access (or a reproducible picture) needs them
locally: ``VEGA`` is a folder with ``vega.min.js``, ``vega-lite.min.js`` and
``vega-embed.min.js`` of the versions DVC names (``npm pack vega@5.20.2 vega-lite@5.2.0
vega-embed@6.18.2`` and take each package's ``build/<name>.min.js``). The page is rendered by
headless Chromium (``--chromium``, default ``chromium``) into one tall PNG.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPTS = ("vega", "vega-lite", "vega-embed")


def localise(html: str, names=SCRIPTS) -> str:
    """Point the page's CDN ``<script src=...npm/<name>@<version>>`` tags at ``<name>.min.js``
    beside it; every name must be found (a DVC that changed its page is an error, not a blank)."""
    for name in names:
        html, n = re.subn(rf'src="https://cdn\.jsdelivr\.net/npm/{re.escape(name)}@[^"]*"', f'src="{name}.min.js"', html)
        if n != 1:
            raise SystemExit(f"dvc plots page: expected one CDN script tag for {name}, found {n}")
    if "charset" not in html:  # DVC's page names no encoding: minus signs would render as mojibake
        html = html.replace("<head>", '<head>\n    <meta charset="utf-8">', 1)
    return html


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--vega-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="PNG")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=5200)
    ap.add_argument("--chromium", default="chromium")
    a = ap.parse_args(argv)
    missing = [n for n in SCRIPTS if not (a.vega_dir / f"{n}.min.js").is_file()]
    if missing:
        print(f"{a.vega_dir}: missing {', '.join(f'{n}.min.js' for n in missing)}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "plots"
        subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(page)], cwd=a.repo, check=True)
        index = page / "index.html"
        index.write_text(localise(index.read_text()))
        for n in SCRIPTS:
            shutil.copy(a.vega_dir / f"{n}.min.js", page / f"{n}.min.js")
        shot = Path(tmp) / "shot.png"
        subprocess.run([a.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={a.width},{a.height}", "--virtual-time-budget=15000",
                        f"--screenshot={shot}", index.as_uri()], check=True, capture_output=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(shot, a.out)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
