#!/usr/bin/env python3
"""Burst test with a generic gRPC client (Python grpcio, asyncio): issue 16's reproduction.

Sends bursts of concurrent `CheckChildInvitation` calls over ONE channel, every call with a 5 s
deadline, and reports per burst: served, shed (RESOURCE_EXHAUSTED), other errors, the time the
whole burst took and the p50/p99 latency. Exits 1 if any burst sheds more than --max-shed (1%)
or gets any other error, so CI can run it.

Stubs are generated at run time from proto/cpc/v1/cpc.proto into a temporary folder (nothing is
written to the repository). Usage:

    pip install grpcio grpcio-tools
    python3 scripts/burst.py --serve target/release/cpc-rules          # starts its own server
    python3 scripts/burst.py --target 127.0.0.1:50051 --sizes 500,2000  # against a running one
"""
import argparse
import asyncio
import importlib
import os
import socket
import subprocess
import sys
import tempfile
import time

import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTNERSHIPS = ["york", "north-yorkshire", "central-bedfordshire", "barnsley", "norfolk"]


def generate_stubs(out_dir):
    """Compiles cpc.proto (and the well-known types it imports) into `out_dir`."""
    from grpc_tools import protoc
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    proto_root = os.path.join(ROOT, "proto")
    rc = protoc.main([
        "protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(proto_root, "cpc", "v1", "cpc.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, out_dir)
    return importlib.import_module("cpc.v1.cpc_pb2"), importlib.import_module("cpc.v1.cpc_pb2_grpc")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary, rules):
    port = free_port()
    target = f"127.0.0.1:{port}"
    # Default options, so the decision record is on: run in a scratch folder so its SQLite file
    # (created in the working directory) lands there, not in the checkout.
    scratch = tempfile.mkdtemp(prefix="cpc-burst-")
    proc = subprocess.Popen([os.path.abspath(binary), "serve", "--addr", target, "--no-watch", "--rules", os.path.abspath(rules)],
                            cwd=scratch, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, target
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("the server did not start listening within 20 s")


def peak_rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def burst(stub, pb, size, deadline):
    def request(i):
        return pb.CheckChildInvitationRequest(
            partnership=PARTNERSHIPS[i % len(PARTNERSHIPS)], case_ref=f"BURST-{i}", age=i % 18,
            sufficient_understanding=i % 3 != 0, wishes_to_attend=pb.CHILD_WISH_YES, sensitive_information=False)

    async def one(i):
        started = time.perf_counter()
        try:
            await stub.CheckChildInvitation(request(i), timeout=deadline)
            return "OK", time.perf_counter() - started
        except grpc.aio.AioRpcError as e:
            return e.code().name, time.perf_counter() - started

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(size)))
    took = time.perf_counter() - started
    codes = {}
    for code, _ in results:
        codes[code] = codes.get(code, 0) + 1
    latencies = sorted(t for _, t in results)
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    return codes, took, p(0.5), p(0.99)


async def run(args, pb, pb_grpc, server_pid):
    failed = False
    async with grpc.aio.insecure_channel(args.target) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        await stub.CheckChildInvitation(pb.CheckChildInvitationRequest(
            partnership="york", age=14, sufficient_understanding=True, wishes_to_attend=pb.CHILD_WISH_YES,
            sensitive_information=False), timeout=args.deadline)
        for size in args.sizes:
            for run_no in range(1, args.runs + 1):
                codes, took, p50, p99 = await burst(stub, pb, size, args.deadline)
                served = codes.pop("OK", 0)
                shed = codes.pop("RESOURCE_EXHAUSTED", 0)
                other = sum(codes.values())
                rss = peak_rss_mib(server_pid) if server_pid else None
                print(f"burst {size:>5} run {run_no}: served {served} shed {shed} other {other} {dict(codes) if codes else ''}"
                      f" whole burst {took * 1000:.0f} ms p50 {p50:.1f} ms p99 {p99:.1f} ms"
                      + (f" server peak RSS {rss:.1f} MiB" if rss else ""), flush=True)
                if shed > args.max_shed * size or other:
                    failed = True
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:50051")
    ap.add_argument("--serve", metavar="CPC_RULES_BINARY", help="start `cpc-rules serve` (default options) on a free port")
    ap.add_argument("--rules", default=os.path.join(ROOT, "rules"))
    ap.add_argument("--sizes", default="500,2000", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--runs", default=3, type=int)
    ap.add_argument("--deadline", default=5.0, type=float, help="each call's deadline, seconds")
    ap.add_argument("--max-shed", default=0.01, type=float, help="largest share of a burst that may be shed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pb, pb_grpc = generate_stubs(tmp)
        proc = None
        if args.serve:
            proc, args.target = start_server(args.serve, args.rules)
        try:
            failed = asyncio.run(run(args, pb, pb_grpc, proc.pid if proc else None))
        finally:
            if proc:
                proc.terminate()
                proc.wait(timeout=15)
    if failed:
        print(f"FAILED: a burst shed more than {args.max_shed:.0%} or got another error", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
