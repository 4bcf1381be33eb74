"""What authentication costs: GetAttempt calls/s through a gateway that checks a bearer
token on every call, against the same gateway with `--insecure-no-auth`.

Both gateways run as their own processes over one embedded PostgreSQL, and are measured
in alternating rounds (A, B, A, B, ...) so that drift on a busy machine falls on both.
`--insecure-no-auth` still passes every call through the interceptor (it records the
caller and decodes requests); to measure the interceptor as a whole, give `--baseline`
a checkout from before it existed (`git worktree add /tmp/before 50bf7ac`), whose gateway
then runs as a third one in the same rounds.
Goal (issue 9): the interceptor costs at most 5 % of GetAttempt throughput.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.report import print_figures
from bench.store import GatewayProcess, calls_per_second, prefill
from gateway.inprocess import GatewayThread
from metalearn.credentials import authorization, open_channel
from metalearn.v1 import attempt_service_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--baseline", type=Path, help="a checkout without authentication")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with scratch_postgres() as scratch:
        url, tmp = scratch.url, scratch.dir
        GatewayThread(url).start().stop()  # migrates
        prefill(url, "rate-1-0", 10)  # what calls_per_second's GetAttempt reads
        gateways = {
            "auth": GatewayProcess(url, tmp / "auth"),
            "no_auth": GatewayProcess(url, tmp / "open", "--insecure-no-auth"),
        }
        if args.baseline is not None:
            gateways["baseline"] = GatewayProcess(url, tmp / "baseline", checkout=args.baseline)
        rates: dict[str, list[float]] = {name: [] for name in gateways}
        try:
            # Both clients send the same header (the open gateway ignores it), on plain
            # channels: what differs is the gateway's interceptor, and only that.
            token = gateways["auth"].token
            assert token is not None
            header = authorization(token)
            channels = {name: open_channel(g.address, None) for name, g in gateways.items()}
            stubs = {n: attempt_service_pb2_grpc.AttemptServiceStub(c) for n, c in channels.items()}
            for stub in stubs.values():  # warm-up: connections, caches, the token
                calls_per_second(stub, 1.0, args.concurrency, only="get", metadata=header)
            for _ in range(args.rounds):
                for name, stub in stubs.items():
                    got = calls_per_second(
                        stub, args.seconds, args.concurrency, only="get", metadata=header
                    )
                    rates[name].append(got["get"])
        finally:
            for gateway in gateways.values():
                gateway.stop()
    for name, values in rates.items():
        figures[f"get_per_s_{name}_{args.concurrency}_in_flight"] = statistics.median(values)
    auth = statistics.median(rates["auth"])
    figures["auth_cost_percent"] = 100 * (1 - auth / statistics.median(rates["no_auth"]))
    if "baseline" in rates:
        figures["interceptor_cost_percent"] = 100 * (
            1 - auth / statistics.median(rates["baseline"])
        )
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
