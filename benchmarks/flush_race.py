"""Reproduces the Beam 2.77 runner data-plane race that lost documents at 100k.

The FnApiRunner sends each bundle input to its SDK workers through a
``_GrpcDataChannel`` whose output streams flush on a timer
(``worker_handlers.DATA_BUFFER_TIME_LIMIT_MS``, 1000 ms).  The periodic flush takes
the buffer, hands it to the send queue and clears the buffer, while the runner's own
thread keeps writing: whatever is written in between is gone.  This script drives that
channel the way the runner does (28 writes of 10 MB per bundle input, a consumer
draining the send queue at ~2 GB/s like gRPC) and prints bytes written against bytes
delivered, with the timer on (Beam's default) and off (what ``pipelines.runner`` sets for
local runs, ``untime_runner_flushes``)::

    python benchmarks/flush_race.py --trials 5
"""

from __future__ import annotations

import argparse
import threading
import time

from apache_beam.runners.worker.data_plane import _GrpcDataChannel


def delivered_bytes(
    time_limit_ms: int, bundles: int = 6, writes: int = 28, chunk_mb: int = 10
) -> tuple[int, int]:
    """(bytes written, bytes that reached the consumer) for one channel's bundle inputs.

    Args:
      time_limit_ms: the channel's timed flush interval; 0 turns the timer off.
      bundles: bundle inputs sent, one stream each.
      writes: ``write`` calls per bundle input.
      chunk_mb: size of each write.
    """
    channel = _GrpcDataChannel(data_buffer_time_limit_ms=time_limit_ms)
    got: list[int] = []

    def drain() -> None:
        for elements in channel._write_outputs():
            for data in elements.data:
                got.append(len(data.data))
                time.sleep(len(data.data) / 2e9)

    consumer = threading.Thread(target=drain, daemon=True)
    consumer.start()
    chunk = b"x" * (chunk_mb << 20)
    for bundle in range(bundles):
        stream = channel.output_stream(f"bundle_{bundle}", "input")
        for _ in range(writes):
            stream.write(chunk)
        stream.close()
    channel.close()
    consumer.join()
    return bundles * writes * len(chunk), sum(got)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    for limit in (1000, 0):
        lost = []
        for _ in range(args.trials):
            written, delivered = delivered_bytes(limit)
            lost.append(written - delivered)
        print(
            f"timed flush {limit:>4} ms: {args.trials} trials x {written / 1e9:.2f} GB written, "
            f"lost per trial (MB): {[round(b / 1e6) for b in lost]}"
        )


if __name__ == "__main__":
    main()
