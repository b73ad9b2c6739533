"""The committed generated code must equal a fresh generation from protos/."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--out", str(tmp_path)], check=True
    )
    fresh, committed = tmp_path / "palaestra" / "v1", ROOT / "src" / "palaestra" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, (
        f"regenerate with scripts/generate_protos.py: {mismatch or errors} differ"
    )


def test_protos_dir_holds_every_non_well_known_import(tmp_path: Path) -> None:
    """Clients in other languages load protos/ alone (plus the well-known types every toolchain ships):
    compile it with only protos/ and protoc's bundled well-known types on the include path."""
    import grpc_tools
    from google.protobuf import descriptor_pb2
    from google.rpc import status_pb2
    from grpc_tools import protoc

    protos = ROOT / "protos"
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
    assert "google/rpc/status.proto" in sources
    out = tmp_path / "set.pb"
    rc = protoc.main(
        [
            "protoc",
            f"-I{protos}",
            f"-I{well_known}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            *sources,
        ]
    )
    assert rc == 0
    files = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}
    vendored = files["google/rpc/status.proto"]
    runtime = descriptor_pb2.FileDescriptorProto()
    status_pb2.DESCRIPTOR.CopyToProto(runtime)
    assert vendored.package == runtime.package

    def shape(f: descriptor_pb2.FileDescriptorProto) -> list[tuple[str, list[tuple[object, ...]]]]:
        return [
            (m.name, [(x.name, x.number, x.type, x.label, x.type_name) for x in m.field])
            for m in f.message_type
        ]

    assert shape(vendored) == shape(runtime), "protos/google/rpc/status.proto differs from google.rpc.Status"
    env = files["palaestra/v1/env.proto"]
    [service] = env.service
    methods = [m.name for m in service.method]
    assert "Close" not in methods, "generated clients (e.g. grpc-js) have close() of their own"
    assert "CloseEpisodes" in methods
