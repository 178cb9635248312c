"""A load-generating app for lifecycle tests: ``python -m tests.integration.load_client``.

Sends ``--count`` records through kpd's Python client and writes one JSON line per record
outcome to ``--out``: ``[index, status, partition, offset]`` (status: ok / failed:<error>).
Values are ``<client>-<index>`` so every record is unique and traceable; keys cycle over
``--keys`` distinct keys so per-key order can be checked. Prints ``SENT n`` to stdout after the
n-th record was handed to the client (every 1000), so a test can act mid-stream.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from kpd import DeliveryError, Producer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--acks", default="kafka")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-block-ms", type=float, default=60_000)
    parser.add_argument("--rate", type=float, default=0, help="records/s at most (0: no limit)")
    args = parser.parse_args()
    futures = []
    started = time.monotonic()
    with Producer(args.socket, acks=args.acks, max_block_ms=args.max_block_ms) as producer:
        for index in range(args.count):
            if args.rate and index % 100 == 0:
                ahead = started + index / args.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # paced, so a test can act while records still flow
            key = f"{args.client}-k{index % args.keys}".encode()
            value = f"{args.client}-{index}".encode()
            futures.append(producer.send(args.topic, value, key=key))
            if index == 999:
                # "Records flowing" means kpd has taken some: tests act on SENT lines, and a
                # fast client can hand over thousands before kpd has accepted the first.
                futures[0].exception(timeout=60)
            if index % 1000 == 999:
                print(f"SENT {index + 1}", flush=True)
        try:
            producer.flush(timeout=120)
        except Exception as exc:  # the outcomes below say what happened to each record
            print(f"FLUSH {exc!r}", flush=True)
    with open(args.out, "w") as out:
        for index, future in enumerate(futures):
            try:
                meta = future.result(timeout=0)
                out.write(json.dumps([index, "ok", meta.partition, meta.offset]) + "\n")
            except DeliveryError as exc:
                out.write(json.dumps([index, f"failed:{exc}", -1, -1]) + "\n")
            except Exception as exc:
                out.write(json.dumps([index, f"failed:{type(exc).__name__}:{exc}", -1, -1]) + "\n")
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
