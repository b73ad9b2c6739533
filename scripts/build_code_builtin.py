# ruff: noqa: E501 - problem statements and solutions read best as long string lines
"""Builds the code plugin's own problem set, src/palaestra/plugins/code/data/builtin.jsonl:
`python scripts/build_code_builtin.py` (`--out FILE` writes elsewhere). A build tool: the runtime package
ships only the data it writes. tests/test_layering.py checks that the committed file is its output.

Each problem has an oracle (a plain Python function written here) that computes the expected values of
its tests, and a reference solution per language written independently as source text. The test suite
runs every reference solution through the real grader and requires full marks.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "src/palaestra/plugins/code/data/builtin.jsonl"
Problem = dict[str, Any]


def function_problem(
    pid: str,
    title: str,
    difficulty: str,
    entry: str,
    prompt: str,
    oracle: Callable[..., Any],
    public: list[tuple[Any, ...]],
    hidden: list[tuple[Any, ...]],
    reference: str,
    extra_hidden: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> Problem:
    def case(name: str, args: tuple[Any, ...]) -> dict[str, str]:
        call = f"{entry}({', '.join(repr(a) for a in args)})"
        return {"name": name, "code": f"assert {call} == {oracle(*args)!r}"}

    return {
        "id": pid,
        "title": title,
        "difficulty": difficulty,
        "style": "function",
        "entry_point": entry,
        "languages": ["python"],
        "prompt": prompt,
        "public_tests": [case(f"example_{i + 1}", a) for i, a in enumerate(public)],
        "hidden_tests": [case(f"hidden_{i + 1}", a) for i, a in enumerate(hidden)]
        + [{"name": n, "code": c} for n, c in extra_hidden],
        "reference": {"python": reference},
        "starter": {"python": f"def {entry}(...):\n    ...\n"},
        "time_limit": 2.0,
        "memory_mb": 256,
        "source": "palaestra-builtin",
    }


def stdio_problem(
    pid: str,
    title: str,
    difficulty: str,
    prompt: str,
    oracle: Callable[[str], str],
    public: list[str],
    hidden: list[str],
    reference: dict[str, str],
    checker: str = "tokens",
) -> Problem:
    return {
        "id": pid,
        "title": title,
        "difficulty": difficulty,
        "style": "stdio",
        "languages": sorted(reference),
        "prompt": prompt,
        "public_tests": [
            {"name": f"sample_{i + 1}", "input": x, "output": oracle(x)} for i, x in enumerate(public)
        ],
        "hidden_tests": [
            {"name": f"hidden_{i + 1}", "input": x, "output": oracle(x)} for i, x in enumerate(hidden)
        ],
        "reference": reference,
        "checker": checker,
        "time_limit": 2.0,
        "memory_mb": 256,
        "source": "palaestra-builtin",
    }


R = random.Random(20260101)


# ---------------------------------------------------------------- function problems


def fizz(n: int) -> str:
    return "FizzBuzz" if n % 15 == 0 else "Fizz" if n % 3 == 0 else "Buzz" if n % 5 == 0 else str(n)


def palin(s: str) -> bool:
    t = [c.lower() for c in s if c.isalnum()]
    return t == t[::-1]


def running_max(xs: list[int]) -> list[int]:
    out, best = [], None
    for x in xs:
        best = x if best is None or x > best else best
        out.append(best)
    return out


def vowels(s: str) -> int:
    return sum(c in "aeiouAEIOU" for c in s)


def merge(iv: list[list[int]]) -> list[list[int]]:
    res: list[list[int]] = []
    for a, b in sorted(iv):
        if res and a <= res[-1][1]:
            res[-1][1] = max(res[-1][1], b)
        else:
            res.append([a, b])
    return res


ROMAN = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
         (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]  # fmt: skip


def to_roman(n: int) -> str:
    out = ""
    for v, s in ROMAN:
        while n >= v:
            out, n = out + s, n - v
    return out


def from_roman(s: str) -> int:
    return next(n for n in range(1, 4000) if to_roman(n) == s)


def lcp(words: list[str]) -> str:
    if not words:
        return ""
    p = words[0]
    while not all(w.startswith(p) for w in words):
        p = p[:-1]
    return p


def balanced(s: str) -> bool:
    s = "".join(c for c in s if c in "()[]{}")
    prev = None
    while prev != s:
        prev, s = s, s.replace("()", "").replace("[]", "").replace("{}", "")
    return not any(c in "()[]{}" for c in s)


def rotate(m: list[list[int]]) -> list[list[int]]:
    return [[m[len(m) - 1 - r][c] for r in range(len(m))] for c in range(len(m[0]))] if m else []


def freqs(text: str) -> dict[str, int]:
    import re

    out: dict[str, int] = {}
    for w in re.findall(r"[a-z']+", text.lower()):
        out[w] = out.get(w, 0) + 1
    return out


def nth_prime(n: int) -> int:
    count, k = 0, 1
    while count < n:
        k += 1
        if all(k % d for d in range(2, int(k**0.5) + 1)):
            count += 1
    return k


def edit(a: str, b: str) -> int:
    from functools import lru_cache

    @lru_cache(None)
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def lis(xs: list[int]) -> int:
    best = [1] * len(xs)
    for i in range(len(xs)):
        for j in range(i):
            if xs[j] < xs[i]:
                best[i] = max(best[i], best[j] + 1)
    return max(best, default=0)


def rle(s: str) -> str:
    out, i = "", 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        out += f"{s[i]}{j - i}"
        i = j
    return out


def flatten(x: Any) -> list[Any]:
    return [y for e in x for y in (flatten(e) if isinstance(e, list) else [e])]


def two_sum(nums: list[int], target: int) -> tuple[int, int] | None:
    pairs = [(i, j) for i in range(len(nums)) for j in range(i + 1, len(nums)) if nums[i] + nums[j] == target]
    return min(pairs) if pairs else None


def duration(text: str) -> int:
    import re

    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not text or m is None:
        raise ValueError(text)
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def insert_at(xs: list[int], x: int) -> int:
    return sum(v < x for v in xs)


def spiral(m: list[list[int]]) -> list[int]:
    out: list[int] = []
    m = [row[:] for row in m]
    while m:
        out += m.pop(0)
        m = [list(r) for r in zip(*m, strict=True)][::-1] if m else []
    return out


def rand_list(n: int, lo: int = -50, hi: int = 50) -> list[int]:
    return [R.randint(lo, hi) for _ in range(n)]


FUNCTION_PROBLEMS = [
    function_problem(
        "fizzbuzz-word", "FizzBuzz word", "easy", "fizzbuzz_word",
        "Write `fizzbuzz_word(n: int) -> str` returning 'Fizz' for multiples of 3, 'Buzz' for multiples of 5, "
        "'FizzBuzz' for multiples of both, else the number as a string.",
        fizz, [(3,), (7,)], [(5,), (15,), (30,), (1,), (98,), (0,)],
        "def fizzbuzz_word(n):\n    s = ''\n    if n % 3 == 0:\n        s += 'Fizz'\n    if n % 5 == 0:\n"
        "        s += 'Buzz'\n    return s or str(n)\n",
    ),
    function_problem(
        "loose-palindrome", "Loose palindrome", "easy", "is_loose_palindrome",
        "Write `is_loose_palindrome(s: str) -> bool`: True when `s` reads the same backwards after dropping every "
        "character that is not a letter or digit and ignoring case.",
        palin, [("A man, a plan, a canal: Panama",), ("abc",)],
        [("",), ("!!",), ("No 'x' in Nixon",), ("ab1ba",), ("ab12ba",), ("Taco cat",)],
        "def is_loose_palindrome(s):\n    kept = ''.join(c.lower() for c in s if c.isalnum())\n"
        "    return kept == kept[::-1]\n",
    ),
    function_problem(
        "running-max", "Running maximum", "easy", "running_max",
        "Write `running_max(xs: list[int]) -> list[int]` whose i-th element is the maximum of xs[0..i].",
        running_max, [([1, 3, 2, 5],), ([],)], [([-1, -2, -3],), ([4],), (rand_list(30),), ([2, 2, 1, 3],)],
        "def running_max(xs):\n    out = []\n    for x in xs:\n        out.append(x if not out else max(out[-1], x))\n"
        "    return out\n",
    ),
    function_problem(
        "count-vowels", "Count vowels", "easy", "count_vowels",
        "Write `count_vowels(s: str) -> int` counting the letters a, e, i, o, u in either case.",
        vowels, [("hello",), ("xyz",)], [("",), ("AEIOU aeiou",), ("Rhythm and blues",), ("queueing",)],
        "def count_vowels(s):\n    return len([c for c in s.lower() if c in 'aeiou'])\n",
    ),
    function_problem(
        "merge-intervals", "Merge intervals", "medium", "merge_intervals",
        "Write `merge_intervals(intervals: list[list[int]]) -> list[list[int]]` merging overlapping closed "
        "intervals [a, b] (touching ones like [1,2] and [2,3] merge) and returning them sorted by start.",
        merge, [([[1, 3], [2, 6], [8, 10]],), ([[1, 2], [2, 3]],)],
        [([],), ([[5, 7]],), ([[6, 8], [1, 9], [2, 4], [4, 7]],), ([[1, 4], [0, 0]],), ([[3, 5], [1, 2], [6, 6]],)],
        "def merge_intervals(intervals):\n    out = []\n    for a, b in sorted(intervals):\n"
        "        if out and a <= out[-1][1]:\n            out[-1][1] = max(out[-1][1], b)\n        else:\n"
        "            out.append([a, b])\n    return out\n",
    ),
    function_problem(
        "roman-to-int", "Roman numerals to integers", "medium", "roman_to_int",
        "Write `roman_to_int(s: str) -> int` converting a valid Roman numeral (1 to 3999) to an integer.",
        from_roman, [("XIV",), ("MCMXCIV",)], [("I",), ("IV",), ("XL",), ("MMMCMXCIX",), ("CDXLIV",), ("LVIII",)],
        "def roman_to_int(s):\n    v = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}\n"
        "    total = 0\n    for i, c in enumerate(s):\n        if i + 1 < len(s) and v[c] < v[s[i + 1]]:\n"
        "            total -= v[c]\n        else:\n            total += v[c]\n    return total\n",
    ),
    function_problem(
        "int-to-roman", "Integers to Roman numerals", "medium", "int_to_roman",
        "Write `int_to_roman(n: int) -> str` for 1 <= n <= 3999 using subtractive notation (IV, IX, XL, ...).",
        to_roman, [(4,), (1994,)], [(1,), (9,), (40,), (3999,), (444,), (2024,)],
        "def int_to_roman(n):\n    table = [(1000, 'M'), (900, 'CM'), (500, 'D'), (400, 'CD'), (100, 'C'), (90, 'XC'),\n"
        "             (50, 'L'), (40, 'XL'), (10, 'X'), (9, 'IX'), (5, 'V'), (4, 'IV'), (1, 'I')]\n"
        "    parts = []\n    for value, sym in table:\n        count, n = divmod(n, value)\n"
        "        parts.append(sym * count)\n    return ''.join(parts)\n",
    ),
    function_problem(
        "common-prefix", "Longest common prefix", "easy", "common_prefix",
        "Write `common_prefix(words: list[str]) -> str` returning the longest common prefix ('' for no words).",
        lcp, [(["flower", "flow", "flight"],), (["dog", "car"],)],
        [([],), (["alone"],), (["same", "same"],), (["", "a"],), (["interview", "internet", "interval"],)],
        "def common_prefix(words):\n    if not words:\n        return ''\n    lo, hi = min(words), max(words)\n"
        "    i = 0\n    while i < len(lo) and lo[i] == hi[i]:\n        i += 1\n    return lo[:i]\n",
    ),
    function_problem(
        "balanced-brackets", "Balanced brackets", "medium", "is_balanced",
        "Write `is_balanced(s: str) -> bool`: True when the brackets ()[]{} in s are balanced and properly "
        "nested; other characters are ignored.",
        balanced, [("([]{})",), ("(]",)], [("",), ("a(b)c",), ("((",), ("{[()()]}",), ("}{",), ("([)]",)],
        "def is_balanced(s):\n    pairs = {')': '(', ']': '[', '}': '{'}\n    stack = []\n    for c in s:\n"
        "        if c in '([{':\n            stack.append(c)\n        elif c in pairs:\n"
        "            if not stack or stack.pop() != pairs[c]:\n                return False\n    return not stack\n",
    ),
    function_problem(
        "rotate-matrix", "Rotate a matrix", "medium", "rotate_clockwise",
        "Write `rotate_clockwise(m: list[list[int]]) -> list[list[int]]` returning the matrix rotated 90 degrees "
        "clockwise (it may be rectangular; [] stays []).",
        rotate, [([[1, 2], [3, 4]],), ([[1, 2, 3]],)], [([],), ([[5]],), ([[1], [2], [3]],), ([[1, 2, 3], [4, 5, 6], [7, 8, 9]],)],
        "def rotate_clockwise(m):\n    return [list(row) for row in zip(*m[::-1])]\n",
    ),
    function_problem(
        "word-frequencies", "Word frequencies", "easy", "word_frequencies",
        "Write `word_frequencies(text: str) -> dict[str, int]`: words are maximal runs of letters a-z and "
        "apostrophes after lower-casing the text; map each word to its count.",
        freqs, [("The cat and the hat",), ("",)], [("Don't stop, don't!",), ("a A a",), ("x1y2z",), ("Hello, world. Hello?",)],
        "import re\n\ndef word_frequencies(text):\n    counts = {}\n    for word in re.findall(r\"[a-z']+\", text.lower()):\n"
        "        counts[word] = counts.get(word, 0) + 1\n    return counts\n",
    ),
    function_problem(
        "nth-prime", "The n-th prime", "medium", "nth_prime",
        "Write `nth_prime(n: int) -> int` returning the n-th prime (nth_prime(1) == 2), fast enough for n up to 20000.",
        nth_prime, [(1,), (6,)], [(2,), (100,), (1000,), (20000,)],
        "def nth_prime(n):\n    limit = 16\n    while True:\n        sieve = bytearray([1]) * (limit + 1)\n"
        "        sieve[0] = sieve[1] = 0\n        for i in range(2, int(limit ** 0.5) + 1):\n            if sieve[i]:\n"
        "                sieve[i * i::i] = bytearray(len(range(i * i, limit + 1, i)))\n"
        "        primes = [i for i, p in enumerate(sieve) if p]\n        if len(primes) >= n:\n"
        "            return primes[n - 1]\n        limit *= 2\n",
    ),
    function_problem(
        "edit-distance", "Edit distance", "hard", "edit_distance",
        "Write `edit_distance(a: str, b: str) -> int`: the least number of single-character insertions, deletions "
        "and substitutions that turn a into b (strings up to 300 characters).",
        edit, [("kitten", "sitting"), ("", "abc")],
        [("same", "same"), ("abc", ""), ("intention", "execution"), ("a" * 120 + "b", "b" + "a" * 120), ("flaw", "lawn")],
        "def edit_distance(a, b):\n    prev = list(range(len(b) + 1))\n    for i, ca in enumerate(a, 1):\n"
        "        cur = [i]\n        for j, cb in enumerate(b, 1):\n"
        "            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))\n        prev = cur\n"
        "    return prev[-1]\n",
    ),
    function_problem(
        "longest-increasing", "Longest increasing subsequence", "hard", "lis_length",
        "Write `lis_length(xs: list[int]) -> int`: the length of the longest strictly increasing subsequence "
        "(lists up to 100000 elements).",
        lis, [([10, 9, 2, 5, 3, 7, 101, 18],), ([],)], [([7, 7, 7],), ([1, 2, 3, 4],), (rand_list(300, 0, 1000),), ([3, 1, 2],)],
        "import bisect\n\ndef lis_length(xs):\n    tails = []\n    for x in xs:\n        i = bisect.bisect_left(tails, x)\n"
        "        if i == len(tails):\n            tails.append(x)\n        else:\n            tails[i] = x\n    return len(tails)\n",
        extra_hidden=[("hidden_large", "assert lis_length(list(range(100000))) == 100000")],
    ),
    function_problem(
        "run-length", "Run-length encoding", "easy", "run_length",
        "Write `run_length(s: str) -> str` replacing each maximal run of a character by the character and the "
        "run's length: 'aaab' -> 'a3b1'.",
        rle, [("aaab",), ("",)], [("a",), ("abc",), ("zzzzzzzzzzzz",), ("aabbaa",)],
        "from itertools import groupby\n\ndef run_length(s):\n    return ''.join(f'{k}{len(list(g))}' for k, g in groupby(s))\n",
    ),
    function_problem(
        "flatten-lists", "Flatten nested lists", "medium", "flatten",
        "Write `flatten(x: list) -> list` returning the non-list elements of arbitrarily nested lists, in order.",
        flatten, [([1, [2, [3]], 4],), ([],)], [([[[]]],), ([["a"], "b", [[["c"]]]],), ([1, [2, 3], [4, [5, [6, 7]]]],)],
        "def flatten(x):\n    out = []\n    for e in x:\n        if isinstance(e, list):\n            out.extend(flatten(e))\n"
        "        else:\n            out.append(e)\n    return out\n",
    ),
    function_problem(
        "two-sum", "Two sum", "medium", "two_sum",
        "Write `two_sum(nums: list[int], target: int)` returning the pair of indices (i, j), i < j, with "
        "nums[i] + nums[j] == target that is smallest in (i, j) order, as a tuple; None if there is none.",
        two_sum, [([2, 7, 11, 15], 9), ([1, 2], 5)], [([3, 3], 6), ([1, 5, 1, 5], 6), ([0, -1, 1, 0], 0), (rand_list(60), 17)],
        "def two_sum(nums, target):\n    for i in range(len(nums)):\n        for j in range(i + 1, len(nums)):\n"
        "            if nums[i] + nums[j] == target:\n                return (i, j)\n    return None\n",
    ),
    function_problem(
        "parse-duration", "Parse a duration", "medium", "parse_duration",
        "Write `parse_duration(text: str) -> int` turning strings like '1h30m', '45s' or '2h5s' (hours, minutes, "
        "seconds in that order, each optional but at least one present) into seconds. Raise ValueError for "
        "anything else.",
        duration, [("1h30m",), ("45s",)], [("2h5s",), ("10m",), ("0h0m1s",), ("100h",)],
        "import re\n\ndef parse_duration(text):\n    m = re.fullmatch(r'(?:(\\d+)h)?(?:(\\d+)m)?(?:(\\d+)s)?', text)\n"
        "    if not text or not m:\n        raise ValueError(f'bad duration {text!r}')\n"
        "    h, mi, s = (int(g or 0) for g in m.groups())\n    return 3600 * h + 60 * mi + s\n",
        extra_hidden=[
            ("hidden_rejects_empty", "with raises(ValueError):\n    parse_duration('')"),
            ("hidden_rejects_order", "with raises(ValueError):\n    parse_duration('5s1h')"),
            ("hidden_rejects_words", "import pytest\nwith pytest.raises(ValueError):\n    parse_duration('ten minutes')"),
        ],
    ),
    function_problem(
        "insert-position", "Insert position", "easy", "insert_position",
        "Write `insert_position(xs: list[int], x: int) -> int`: xs is sorted ascending; return the leftmost index "
        "at which x could be inserted keeping it sorted.",
        insert_at, [([1, 3, 5, 6], 5), ([1, 3, 5, 6], 2)], [([], 1), ([1, 1, 1], 1), ([1, 3], 9), (sorted(rand_list(50)), 0)],
        "def insert_position(xs, x):\n    lo, hi = 0, len(xs)\n    while lo < hi:\n        mid = (lo + hi) // 2\n"
        "        if xs[mid] < x:\n            lo = mid + 1\n        else:\n            hi = mid\n    return lo\n",
    ),
    function_problem(
        "spiral-order", "Spiral order", "medium", "spiral_order",
        "Write `spiral_order(m: list[list[int]]) -> list[int]` listing the matrix clockwise in a spiral from the "
        "top-left corner.",
        spiral, [([[1, 2, 3], [4, 5, 6], [7, 8, 9]],), ([],)], [([[1]],), ([[1, 2], [3, 4], [5, 6]],), ([[1, 2, 3, 4]],), ([[1], [2]],)],
        "def spiral_order(m):\n    out = []\n    if not m:\n        return out\n    top, bottom, left, right = 0, len(m) - 1, 0, len(m[0]) - 1\n"
        "    while top <= bottom and left <= right:\n        out += [m[top][c] for c in range(left, right + 1)]\n"
        "        out += [m[r][right] for r in range(top + 1, bottom + 1)]\n        if top < bottom:\n"
        "            out += [m[bottom][c] for c in range(right - 1, left - 1, -1)]\n        if left < right:\n"
        "            out += [m[r][left] for r in range(bottom - 1, top, -1)]\n"
        "        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1\n    return out\n",
    ),
]  # fmt: skip


# ---------------------------------------------------------------- stdin/stdout problems


def ints(text: str) -> list[int]:
    return [int(t) for t in text.split()]


def o_sum(x: str) -> str:
    v = ints(x)
    return f"{sum(v[1 : 1 + v[0]])}\n"


def o_reverse_words(x: str) -> str:
    return "".join(" ".join(line.split()[::-1]) + "\n" for line in x.splitlines())


def o_distinct(x: str) -> str:
    v = ints(x)
    return f"{len(set(v[1 : 1 + v[0]]))}\n"


def o_kadane(x: str) -> str:
    v = ints(x)[1:]
    return f"{max(sum(v[i:j]) for i in range(len(v)) for j in range(i + 1, len(v) + 1))}\n"


def o_gcd_lcm(x: str) -> str:
    import math

    v = ints(x)
    return "".join(
        f"{math.gcd(a, b)} {a * b // math.gcd(a, b)}\n" for a, b in zip(v[1::2], v[2::2], strict=True)
    )


def o_grid(x: str) -> str:
    from collections import deque

    lines = x.split("\n")
    r, c = map(int, lines[0].split())
    grid = lines[1 : 1 + r]
    start = next((i, j) for i in range(r) for j in range(c) if grid[i][j] == "S")
    dist = {start: 0}
    queue = deque([start])
    while queue:
        i, j = queue.popleft()
        if grid[i][j] == "E":
            return f"{dist[(i, j)]}\n"
        for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if 0 <= a < r and 0 <= b < c and grid[a][b] != "#" and (a, b) not in dist:
                dist[(a, b)] = dist[(i, j)] + 1
                queue.append((a, b))
    return "-1\n"


def o_components(x: str) -> str:
    v = ints(x)
    n, m = v[0], v[1]
    parent = list(range(n + 1))

    def find(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    for k in range(m):
        parent[find(v[2 + 2 * k])] = find(v[3 + 2 * k])
    return f"{len({find(i) for i in range(1, n + 1)})}\n"


def o_coins(x: str) -> str:
    v = ints(x)
    target, coins = v[1], v[2 : 2 + v[0]]
    best = [0] + [10**9] * target
    for t in range(1, target + 1):
        best[t] = min([best[t - c] + 1 for c in coins if c <= t] + [10**9])
    return f"{best[target] if best[target] < 10**9 else -1}\n"


def o_primes(x: str) -> str:
    n = int(x.split()[0])
    if n < 2:
        return "0\n"
    sieve = bytearray([1]) * (n + 1)
    sieve[0] = sieve[1] = 0
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, n + 1, i)))
    return f"{sum(sieve)}\n"


def o_knapsack(x: str) -> str:
    v = ints(x)
    n, cap = v[0], v[1]
    best = [0] * (cap + 1)
    for k in range(n):
        w, val = v[2 + 2 * k], v[3 + 2 * k]
        for c in range(cap, w - 1, -1):
            best[c] = max(best[c], best[c - w] + val)
    return f"{best[cap]}\n"


def o_sort_strings(x: str) -> str:
    words = x.split()[1:]
    return "".join(w + "\n" for w in sorted(words, key=lambda w: (len(w), w)))


def o_mean(x: str) -> str:
    v = [float(t) for t in x.split()[1:]]
    return f"{sum(v) / len(v):.6f}\n"


def o_valid_parens(x: str) -> str:
    s = x.strip()
    best = 0
    for i in range(len(s)):
        depth = 0
        for j in range(i, len(s)):
            depth += 1 if s[j] == "(" else -1
            if depth < 0:
                break
            if depth == 0:
                best = max(best, j - i + 1)
    return f"{best}\n"


def o_triangle(x: str) -> str:
    a, b, c, d, e, f = (float(t) for t in x.split())
    return f"{abs((c - a) * (f - b) - (e - a) * (d - b)) / 2:.4f}\n"


def list_input(values: list[int]) -> str:
    return f"{len(values)}\n{' '.join(map(str, values))}\n"


def random_grid(r: int, c: int, walls: float) -> str:
    cells = [["#" if R.random() < walls else "." for _ in range(c)] for _ in range(r)]
    cells[0][0], cells[r - 1][c - 1] = "S", "E"
    return f"{r} {c}\n" + "\n".join("".join(row) for row in cells) + "\n"


def random_graph(n: int, m: int) -> str:
    edges = [(R.randint(1, n), R.randint(1, n)) for _ in range(m)]
    return f"{n} {m}\n" + "".join(f"{a} {b}\n" for a, b in edges)


CPP_HEAD = (
    "".join(
        f"#include <{h}>\n"
        for h in (
            "algorithm",
            "climits",
            "cstdio",
            "deque",
            "iostream",
            "numeric",
            "sstream",
            "string",
            "vector",
        )
    )
    + "using namespace std;\n"
)
STDIO_PROBLEMS = [
    stdio_problem(
        "sum-of-numbers", "Sum of numbers", "easy",
        "The first line holds n (0 <= n <= 200000); the next line holds n integers of absolute value at most 1e9. "
        "Print their sum.",
        o_sum, [list_input([1, 2, 3])], [list_input([]), list_input([-5]), list_input([10**9] * 1000), list_input(rand_list(5000, -10**9, 10**9))],
        {
            "python": "import sys\nv = list(map(int, sys.stdin.read().split()))\nprint(sum(v[1:1 + v[0]]))\n",
            "cpp": CPP_HEAD + "int main(){long long n,s=0,x;cin>>n;for(long long i=0;i<n;i++){cin>>x;s+=x;}cout<<s<<\"\\n\";}\n",
        },
    ),
    stdio_problem(
        "reverse-words", "Reverse the words", "easy",
        "For every input line, print its words (maximal runs of non-space characters) in reverse order, "
        "separated by single spaces.",
        o_reverse_words, ["hello world\n"], ["a\n", "one two three\nfour five\n", "  spaced   out  words \n", "x y\n\nz\n"],
        {
            "python": "import sys\nfor line in sys.stdin.read().splitlines():\n    print(' '.join(reversed(line.split())))\n",
            "cpp": CPP_HEAD + "int main(){string line;while(getline(cin,line)){istringstream in(line);vector<string> w;string t;"
            "while(in>>t)w.push_back(t);reverse(w.begin(),w.end());for(size_t i=0;i<w.size();i++){if(i)cout<<' ';cout<<w[i];}"
            "cout<<\"\\n\";}}\n",
        },
    ),
    stdio_problem(
        "distinct-values", "Distinct values", "easy",
        "The first line holds n (1 <= n <= 200000), the second n integers. Print how many different values occur.",
        o_distinct, [list_input([1, 2, 2, 3])], [list_input([7]), list_input([5] * 50), list_input(rand_list(5000, 0, 3000))],
        {
            "python": "import sys\nv = sys.stdin.read().split()\nprint(len(set(v[1:1 + int(v[0])])))\n",
            "cpp": CPP_HEAD + "int main(){int n;cin>>n;vector<long long> v(n);for(auto&x:v)cin>>x;sort(v.begin(),v.end());"
            "cout<<(unique(v.begin(),v.end())-v.begin())<<\"\\n\";}\n",
        },
    ),
    stdio_problem(
        "max-subarray", "Maximum subarray", "medium",
        "The first line holds n (1 <= n <= 200000), the second n integers (absolute value <= 1e9). Print the "
        "largest sum of a non-empty contiguous subarray.",
        o_kadane, [list_input([-2, 1, -3, 4, -1, 2, 1, -5, 4])], [list_input([-3]), list_input([-3, -1, -2]), list_input(rand_list(400, -100, 100)), list_input([5, -1, 5])],
        {
            "python": "import sys\nv = list(map(int, sys.stdin.read().split()))[1:]\nbest = cur = v[0]\nfor x in v[1:]:\n"
            "    cur = max(x, cur + x)\n    best = max(best, cur)\nprint(best)\n",
            "cpp": CPP_HEAD + "int main(){int n;cin>>n;long long best=LLONG_MIN,cur=0;for(int i=0;i<n;i++){long long x;cin>>x;"
            "cur=(i==0)?x:max(x,cur+x);best=max(best,cur);}cout<<best<<\"\\n\";}\n",
        },
    ),
    stdio_problem(
        "gcd-lcm", "GCD and LCM", "easy",
        "The first line holds t; each of the next t lines holds two positive integers a and b (up to 1e9). For "
        "each pair print gcd(a, b) and lcm(a, b) separated by a space.",
        o_gcd_lcm, ["2\n4 6\n7 3\n"], ["1\n1 1\n", "3\n12 18\n1000000000 999999999\n5 5\n", "2\n17 34\n9 28\n"],
        {
            "python": "import sys, math\nv = list(map(int, sys.stdin.read().split()))\nfor a, b in zip(v[1::2], v[2::2]):\n"
            "    g = math.gcd(a, b)\n    print(g, a // g * b)\n",
            "cpp": CPP_HEAD + "int main(){int t;cin>>t;while(t--){long long a,b;cin>>a>>b;long long g=__gcd(a,b);"
            "cout<<g<<' '<<a/g*b<<\"\\n\";}}\n",
        },
    ),
    stdio_problem(
        "grid-path", "Shortest grid path", "hard",
        "The first line holds R and C (up to 500 each); then R lines of C characters: '.' free, '#' wall, one 'S' "
        "(start) and one 'E' (end). Moving up, down, left or right between free cells, print the least number of "
        "moves from S to E, or -1 when E cannot be reached.",
        o_grid, ["3 3\nS.#\n.#.\n..E\n"], ["1 2\nSE\n", "2 2\nS#\n#E\n", random_grid(30, 40, 0.25), random_grid(100, 100, 0.2)],
        {
            "python": "import sys\nfrom collections import deque\ndata = sys.stdin.read().split()\nr, c = int(data[0]), int(data[1])\n"
            "g = data[2:2 + r]\nflat = ''.join(g)\ns, e = flat.index('S'), flat.index('E')\ndist = [-1] * (r * c)\n"
            "dist[s] = 0\nq = deque([s])\nwhile q:\n    p = q.popleft()\n    i, j = divmod(p, c)\n"
            "    for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):\n"
            "        if 0 <= a < r and 0 <= b < c and flat[a * c + b] != '#' and dist[a * c + b] < 0:\n"
            "            dist[a * c + b] = dist[p] + 1\n            q.append(a * c + b)\nprint(dist[e])\n",
            "cpp": CPP_HEAD + "int main(){int r,c;cin>>r>>c;vector<string> g(r);for(auto&s:g)cin>>s;int s=0,e=0;"
            "for(int i=0;i<r;i++)for(int j=0;j<c;j++){if(g[i][j]=='S')s=i*c+j;if(g[i][j]=='E')e=i*c+j;}"
            "vector<int> d(r*c,-1);d[s]=0;deque<int> q{s};int di[]={1,-1,0,0},dj[]={0,0,1,-1};"
            "while(!q.empty()){int p=q.front();q.pop_front();int i=p/c,j=p%c;for(int k=0;k<4;k++){int a=i+di[k],b=j+dj[k];"
            "if(a<0||b<0||a>=r||b>=c||g[a][b]=='#'||d[a*c+b]>=0)continue;d[a*c+b]=d[p]+1;q.push_back(a*c+b);}}"
            "cout<<d[e]<<\"\\n\";}\n",
        },
    ),
    stdio_problem(
        "connected-components", "Connected components", "medium",
        "The first line holds n and m (n up to 100000 vertices numbered 1..n, m up to 200000 edges); each of the "
        "next m lines holds an undirected edge a b. Print the number of connected components.",
        o_components, ["5 3\n1 2\n2 3\n4 5\n"], ["1 0\n", "3 1\n2 2\n", random_graph(200, 150), random_graph(3000, 2500)],
        {
            "python": "import sys\nv = list(map(int, sys.stdin.buffer.read().split()))\nn, m = v[0], v[1]\nparent = list(range(n + 1))\n"
            "def find(a):\n    while parent[a] != a:\n        parent[a] = parent[parent[a]]\n        a = parent[a]\n    return a\n"
            "count = n\nfor k in range(m):\n    a, b = find(v[2 + 2 * k]), find(v[3 + 2 * k])\n    if a != b:\n"
            "        parent[a] = b\n        count -= 1\nprint(count)\n",
            "cpp": CPP_HEAD + "vector<int> p;int f(int a){while(p[a]!=a){p[a]=p[p[a]];a=p[a];}return a;}"
            "int main(){int n,m;cin>>n>>m;p.resize(n+1);iota(p.begin(),p.end(),0);int cnt=n;"
            "while(m--){int a,b;cin>>a>>b;a=f(a);b=f(b);if(a!=b){p[a]=b;cnt--;}}cout<<cnt<<\"\\n\";}\n",
        },
    ),
    stdio_problem(
        "coin-change", "Fewest coins", "medium",
        "The first line holds n and T (n <= 100 coin values, T <= 100000); the second line holds the n coin "
        "values (positive, unlimited supply). Print the fewest coins that sum to exactly T, or -1.",
        o_coins, ["3 11\n1 2 5\n"], ["1 3\n2\n", "2 0\n3 4\n", "3 99\n7 11 13\n", "5 100000\n3 7 405 436 2000\n"],
        {
            "python": "import sys\nv = list(map(int, sys.stdin.read().split()))\nn, t = v[0], v[1]\ncoins = v[2:2 + n]\nINF = float('inf')\n"
            "best = [0] + [INF] * t\nfor c in coins:\n    for x in range(c, t + 1):\n        if best[x - c] + 1 < best[x]:\n"
            "            best[x] = best[x - c] + 1\nprint(best[t] if best[t] != INF else -1)\n",
            "cpp": CPP_HEAD + "int main(){int n,t;cin>>n>>t;vector<int> c(n);for(auto&x:c)cin>>x;vector<int> b(t+1,INT_MAX);b[0]=0;"
            "for(int x:c)for(int s=x;s<=t;s++)if(b[s-x]!=INT_MAX)b[s]=min(b[s],b[s-x]+1);"
            "cout<<(b[t]==INT_MAX?-1:b[t])<<\"\\n\";}\n",
        },
    ),
    stdio_problem(
        "count-primes", "Counting primes", "medium",
        "Given n (0 <= n <= 5000000) on one line, print how many primes are less than or equal to n.",
        o_primes, ["10\n"], ["0\n", "2\n", "100\n", "5000000\n"],
        {
            "python": "n = int(input())\nif n < 2:\n    print(0)\nelse:\n    s = bytearray([1]) * (n + 1)\n    s[0] = s[1] = 0\n"
            "    for i in range(2, int(n ** 0.5) + 1):\n        if s[i]:\n            s[i*i::i] = bytes(len(range(i*i, n + 1, i)))\n"
            "    print(sum(s))\n",
            "cpp": CPP_HEAD + "int main(){int n;cin>>n;if(n<2){cout<<0<<\"\\n\";return 0;}vector<bool> s(n+1,true);s[0]=s[1]=false;"
            "for(long long i=2;i*i<=n;i++)if(s[i])for(long long j=i*i;j<=n;j+=i)s[j]=false;"
            "cout<<count(s.begin(),s.end(),true)<<\"\\n\";}\n",
        },
    ),
    stdio_problem(
        "knapsack", "Knapsack", "hard",
        "The first line holds n and W (n <= 200 items, capacity W <= 20000); each of the next n lines holds an "
        "item's weight and value. Print the largest total value of items with total weight at most W, each item "
        "used at most once.",
        o_knapsack, ["3 50\n10 60\n20 100\n30 120\n"], ["1 5\n6 10\n", "2 10\n5 5\n5 6\n",
            "200 20000\n" + "".join(f"{R.randint(1, 500)} {R.randint(1, 1000)}\n" for _ in range(200))],
        {
            "python": "import sys\nv = list(map(int, sys.stdin.read().split()))\nn, cap = v[0], v[1]\nbest = [0] * (cap + 1)\n"
            "for k in range(n):\n    w, val = v[2 + 2 * k], v[3 + 2 * k]\n    for c in range(cap, w - 1, -1):\n"
            "        if best[c - w] + val > best[c]:\n            best[c] = best[c - w] + val\nprint(best[cap])\n",
            "cpp": CPP_HEAD + "int main(){int n,W;cin>>n>>W;vector<long long> b(W+1,0);while(n--){int w;long long v;cin>>w>>v;"
            "for(int c=W;c>=w;c--)b[c]=max(b[c],b[c-w]+v);}cout<<b[W]<<\"\\n\";}\n",
        },
    ),
    stdio_problem(
        "sort-by-length", "Sort by length", "easy",
        "The first line holds n; the next line holds n words. Print them one per line, shorter words first and "
        "words of equal length in dictionary order.",
        o_sort_strings, ["4\npear fig apple kiwi\n"], ["1\nsolo\n", "3\nb a c\n", "6\nzz a yyy b zz aaa\n"],
        {
            "python": "words = open(0).read().split()[1:]\nfor w in sorted(words, key=lambda w: (len(w), w)):\n    print(w)\n",
            "cpp": CPP_HEAD + "int main(){int n;cin>>n;vector<string> w(n);for(auto&s:w)cin>>s;"
            "sort(w.begin(),w.end(),[](const string&a,const string&b){return a.size()!=b.size()?a.size()<b.size():a<b;});"
            "for(auto&s:w)cout<<s<<\"\\n\";}\n",
        },
    ),
    stdio_problem(
        "longest-valid-parens", "Longest valid parentheses", "hard",
        "One line holds a string of '(' and ')' (length up to 200000). Print the length of its longest "
        "substring of correctly matched parentheses.",
        o_valid_parens, ["(()\n", ")()())\n"], ["()\n", "(((\n", "()(())\n", "".join(R.choice("()") for _ in range(300)) + "\n"],
        {
            "python": "s = input().strip()\nstack = [-1]\nbest = 0\nfor i, ch in enumerate(s):\n    if ch == '(':\n        stack.append(i)\n"
            "    else:\n        stack.pop()\n        if not stack:\n            stack.append(i)\n        else:\n"
            "            best = max(best, i - stack[-1])\nprint(best)\n",
            "cpp": CPP_HEAD + "int main(){string s;cin>>s;vector<int> st{-1};int best=0;for(int i=0;i<(int)s.size();i++){"
            "if(s[i]=='(')st.push_back(i);else{st.pop_back();if(st.empty())st.push_back(i);else best=max(best,i-st.back());}}"
            "cout<<best<<\"\\n\";}\n",
        },
    ),
    stdio_problem(
        "mean-value", "Mean value", "easy",
        "The first line holds n >= 1, the next line n real numbers. Print their mean; answers within 1e-6 "
        "(absolute or relative) are accepted.",
        o_mean, ["3\n1 2 4\n"], ["1\n-2.5\n", "4\n0.1 0.2 0.3 0.4\n", "5\n1e6 1 2 3 4\n"],
        {
            "python": "v = list(map(float, open(0).read().split()[1:]))\nprint(sum(v) / len(v))\n",
            "cpp": CPP_HEAD + "int main(){int n;cin>>n;double s=0,x;for(int i=0;i<n;i++){cin>>x;s+=x;}printf(\"%.9f\\n\",s/n);}\n",
        },
        checker="float",
    ),
    stdio_problem(
        "triangle-area", "Triangle area", "easy",
        "One line holds six real numbers x1 y1 x2 y2 x3 y3, the corners of a triangle. Print its area; answers "
        "within 1e-6 are accepted.",
        o_triangle, ["0 0 4 0 0 3\n"], ["0 0 1 1 2 2\n", "-1 -1 1 -1 0 5\n", "0.5 0.5 2.5 0.5 0.5 1.5\n"],
        {"python": "a, b, c, d, e, f = map(float, input().split())\nprint(abs((c - a) * (f - b) - (e - a) * (d - b)) / 2)\n"},
        checker="float",
    ),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT)
    out = parser.parse_args().out
    problems = FUNCTION_PROBLEMS + STDIO_PROBLEMS
    ids = [p["id"] for p in problems]
    assert len(ids) == len(set(ids)), "duplicate problem ids"
    with open(out, "w", encoding="utf-8") as handle:
        for problem in problems:
            handle.write(json.dumps(problem, ensure_ascii=False) + "\n")
    print(f"wrote {len(problems)} problems to {out}")


if __name__ == "__main__":
    main()
