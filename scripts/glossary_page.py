"""Write the glossary in both languages, docs/glossary.md and docs/zh/glossary.md, from the SD1.5
traces and the naming tables (explorer.glossary).

    python scripts/glossary_page.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from explorer import trace
    from explorer.glossary import entries, page

    found = entries({c: trace(c) for c in ("unet", "vae", "clip")})
    for lang, path in (("en", ROOT / "docs" / "glossary.md"), ("zh", ROOT / "docs" / "zh" / "glossary.md")):
        path.parent.mkdir(exist_ok=True)
        path.write_text(page(found, lang), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
