"""Regenerate the committed protobuf/gRPC code from protos/ (python scripts/generate_protos.py).

Output goes to src/palaestra/v1/ with mypy stubs. `--out DIR` writes into DIR instead, so the
tests can compare a fresh generation with what is committed.

protos/ holds everything the contract imports except the protobuf well-known types
(google/protobuf/*.proto, bundled with every protobuf toolchain): google/rpc/status.proto is
vendored there from googleapis. Only palaestra/v1 is generated; google.rpc's Python code comes from
the googleapis-common-protos package.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out_dir: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "palaestra" / "v1").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *sources,
    ]
    # protoc finds its mypy plugins on PATH: the ones installed beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
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
