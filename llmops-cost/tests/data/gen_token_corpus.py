#!/usr/bin/env python3
"""Records the token-parity corpus: varied texts and their token counts from OpenAI's tiktoken.

Usage:
    pip install tiktoken
    python3 gen_token_corpus.py [--assets DIR] > token_corpus.json

tiktoken normally downloads its BPE ranks files. This script runs offline: it copies the
`.tiktoken` files shipped in the tiktoken-rs crate (DIR, found under
~/.cargo/registry/src/*/tiktoken-rs-*/assets by default) into a private cache directory under
the names tiktoken looks for (the SHA-1 hex of the blob URL, see tiktoken/load.py
`read_file_cached`) and points TIKTOKEN_CACHE_DIR at it. tiktoken checks each file against its
own `expected_hash` (SHA-256) before use, so a wrong file fails loudly instead of producing
wrong counts.

Each case is {"name", "text", "repeat", "counts": {"o200k_base": n, "cl100k_base": n}}: the
text is `text * repeat` (long single-character runs are stored compactly). Counts are
`encode_ordinary` lengths: special-token strings such as "<|endoftext|>" count as plain text.
"""

import argparse
import glob
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile

BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
ENCODINGS = ["o200k_base", "cl100k_base"]


def prepare_cache(assets: str) -> None:
    cache = tempfile.mkdtemp(prefix="tiktoken-cache-")
    for enc in ENCODINGS:
        src = os.path.join(assets, f"{enc}.tiktoken")
        key = hashlib.sha1(BLOB.format(enc).encode()).hexdigest()
        shutil.copyfile(src, os.path.join(cache, key))
    os.environ["TIKTOKEN_CACHE_DIR"] = cache


def default_assets() -> str:
    found = sorted(glob.glob(os.path.expanduser(
        "~/.cargo/registry/src/*/tiktoken-rs-*/assets")))
    if not found:
        sys.exit("tiktoken-rs assets not found: pass --assets DIR")
    return found[-1]


def corpus():
    """Yields (name, text, repeat). Deterministic: a fixed seed drives the random cases."""
    rng = random.Random(20261127)
    fixed = [
        ("empty", ""),
        ("ascii_word", "hello"),
        ("ascii_sentence", "The quick brown fox jumps over the lazy dog."),
        ("numbers", "3.14159 2718281828 1,000,000 -42 0x7fff 1e-9 007"),
        ("contractions", "I'm sure they'd've said it's fine, wouldn't you?"),
        ("punctuation", "!!!???...;;;:::---___***&&&%%%$$$###@@@"),
        ("emoji_simple", "I love Rust 🦀 and coffee ☕!"),
        ("emoji_zwj", "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👩🏽‍💻 coder"),
        ("emoji_skin_tones", "👍🏻👍🏼👍🏽👍🏾👍🏿"),
        ("emoji_flags", "🇫🇷🇩🇪🇯🇵🇺🇸🇧🇷🇮🇳"),
        ("emoji_only", "😀😃😄😁😆😅😂🤣🥲☺️😊😇"),
        ("chinese", "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。"),
        ("japanese", "東京は日本の首都です。ひらがなとカタカナ、そして漢字。"),
        ("korean", "안녕하세요. 저는 러스트 프로그래밍을 좋아합니다."),
        ("arabic", "مرحبا بالعالم، هذه جملة باللغة العربية."),
        ("hebrew", "שלום עולם, זה משפט בעברית."),
        ("hindi", "नमस्ते दुनिया, यह हिंदी में एक वाक्य है।"),
        ("thai", "สวัสดีชาวโลก นี่คือประโยคภาษาไทย"),
        ("russian", "Привет, мир! Это предложение на русском языке."),
        ("greek", "Γειά σου Κόσμε! Αυτή είναι μια πρόταση."),
        ("mixed_scripts", "Rust 是一门系统编程语言 — 速い、安全 and 🦀 friendly."),
        ("combining_marks", "e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0357\u0302a\u0340\u0341lgo"),
        ("zero_width", "zero\u200bwidth\u200cjoiner\u200dtext\ufeffbom"),
        ("rust_code", "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{v:?}\");\n}\n"),
        ("python_code", "def fib(n: int) -> int:\n\tif n < 2:\n\t\treturn n\n\treturn fib(n - 1) + fib(n - 2)\n"),
        ("json", '{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}],"temperature":0.2}'),
        ("html", "<!DOCTYPE html><html><head><title>T</title></head><body><p class=\"x\">Hi &amp; bye</p></body></html>"),
        ("sql", "SELECT id, name FROM users WHERE created_at >= NOW() - INTERVAL '7 days' ORDER BY 2;"),
        ("url", "https://example.com/path/to/page?query=1&other=two#fragment"),
        ("base64", "SGVsbG8sIFdvcmxkIQ==VGhpcyBpcyBhIHRlc3Qgb2YgYmFzZTY0IGVuY29kaW5nLg=="),
        ("hex", "deadbeefcafebabe0123456789abcdef" * 4),
        ("special_tokens_as_text", "<|endoftext|> <|im_start|>user<|im_end|> <|fim_prefix|>"),
        ("spaces_trailing", "trailing spaces   "),
        ("spaces_leading", "     leading spaces"),
        ("tabs", "\t\tindented\twith\ttabs\t"),
        ("newlines", "line1\nline2\n\nline4\n\n\n"),
        ("crlf", "windows\r\nline\r\nendings\r\n"),
        ("mixed_whitespace", " \t \n \r\n\t\t  \n   \t"),
        ("nbsp", "non\u00a0breaking\u00a0space and\u2003em\u2003space"),
        ("control_chars", "bell\x07 back\x08 esc\x1b[31mred\x1b[0m nul-free"),
        ("math", "∀ε>0 ∃δ>0: |x−a|<δ ⇒ |f(x)−f(a)|<ε; ∑ᵢ xᵢ² ≤ ∞"),
        ("currency", "€100, £50, ¥1000, ₹500, ₿0.01, $9.99"),
        ("long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis " * 3),
        ("apostrophes", "'s 't 're 've 'm 'll 'd 'S 'T 'RE"),
        ("uppercase", "THIS IS ALL UPPERCASE TEXT WITH SOME NUMBERS 12345"),
        ("camel_snake", "camelCaseIdentifier snake_case_identifier SCREAMING_SNAKE kebab-case"),
        ("markdown", "# Title\n\n- item **bold** _it_\n- `code`\n\n```rust\nlet x = 1;\n```\n"),
        ("private_use", "\ue000\ue001\uf8ff private use"),
        ("astral_plane", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𓀀𓀁 𐍈"),
    ]
    for name, text in fixed:
        yield name, text, 1

    # Long runs of one character (the worst case of naive BPE merging).
    runs = [
        ("run_a_50000", "a", 50000),
        ("run_space_50000", " ", 50000),
        ("run_newline_20000", "\n", 20000),
        ("run_digit_30000", "7", 30000),
        ("run_cjk_20000", "的", 20000),
        ("run_emoji_10000", "🦀", 10000),
        ("run_ab_25000", "ab", 25000),
        ("run_tab_5000", "\t", 5000),
        ("run_dot_10000", ".", 10000),
        ("run_a_1000", "a", 1000),
        ("run_a_1", "a", 1),
        ("run_space_1000_word", " ", 1000),
    ]
    for name, text, rep in runs:
        yield name, text, rep

    # Whitespace runs of every length around regex boundaries.
    for n in range(1, 17):
        yield f"ws_spaces_{n}_then_word", " " * n + "word", 1
    for n in range(1, 9):
        yield f"ws_newlines_{n}_spaces", "x" + "\n" * n + "  y", 1

    alphabets = {
        "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.!?'\"-\n\t",
        "cjk": "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生",
        "emoji": "😀😂🥲😍🤖🦀🚀🔥✨🎉👍🏽👨‍💻🇯🇵❤️",
        "code": "{}[]()<>;:=+-*/%&|^!~.,_ \n\tfnletmutimplstructenumreturnifelsewhilefor0123456789\"'",
        "mixed": "aé中😀 \n\t1-_.,アк한ب",
    }
    # Random strings from each alphabet, lengths 1..2000.
    for alpha_name, alpha in alphabets.items():
        for i in range(24):
            length = rng.choice([1, 2, 3, 5, 8, 13, 50, 100, 500, 2000])
            yield f"random_{alpha_name}_{i}", "".join(rng.choice(alpha) for _ in range(length)), 1

    # Random code points from many blocks (valid scalar values only).
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
              (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x10000, 0x1007F), (0x2000, 0x206F)]
    for i in range(30):
        length = rng.choice([1, 4, 16, 64, 256, 1024])
        chars = []
        for _ in range(length):
            lo, hi = rng.choice(blocks)
            chars.append(chr(rng.randint(lo, hi)))
        yield f"random_codepoints_{i}", "".join(chars), 1

    # Random words: prose-like text.
    words = ["the", "model", "token", "budget", "cache", "price", "request", "stream", "Rust",
             "naïve", "café", "résumé", "über", "日本", "😀", "don't", "isn't", "1234", "3.5",
             "gpt-4o", "llmops", "\n", "  ", "\t", "—", "…", "(", ")", "\"quoted\""]
    for i in range(20):
        n = rng.choice([5, 20, 100, 400])
        yield f"random_words_{i}", " ".join(rng.choice(words) for _ in range(n)), 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", default=None)
    args = ap.parse_args()
    prepare_cache(args.assets or default_assets())
    import tiktoken  # after TIKTOKEN_CACHE_DIR is set

    encs = {name: tiktoken.get_encoding(name) for name in ENCODINGS}
    cases = []
    for name, text, rep in corpus():
        full = text * rep
        counts = {e: len(enc.encode_ordinary(full)) for e, enc in encs.items()}
        cases.append({"name": name, "text": text, "repeat": rep, "counts": counts})
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    json.dump({
        "generator": "gen_token_corpus.py",
        "tiktoken_version": tiktoken.__version__,
        "cases": cases,
    }, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
