"""Regenerate the committed protobuf/gRPC code from protos/ (python scripts/generate_protos.py).

Output goes to src/palaestra/v1/ with mypy stubs. `--check DIR` writes into DIR instead, so the
tests can compare a fresh generation with what is committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import google.rpc
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out_dir: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "palaestra" / "v1").glob("*.proto"))
    googleapis = Path(
        next(iter(google.rpc.__path__))
    ).parent.parent  # site-packages holding google/rpc/*.proto
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    package = out_dir / "palaestra" / "v1"
    (package / "__init__.py").write_text('"""Generated from protos/palaestra/v1 - do not edit."""\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "src", help="root of the generated package tree")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
