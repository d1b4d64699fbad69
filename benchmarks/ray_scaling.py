"""Plain serve vs serve --ray with 1 and 2 workers on this machine (a local Ray cluster).

    .venv/bin/python benchmarks/ray_scaling.py --bundle B --data DIR [--backend ort]
end-to-end img/s counts from the first unit to the last (models loaded; for Ray the actor start-up,
which loads the bundle in each actor, is inside it, as it would be on a cluster).
"""

import argparse
import tempfile
import time

import ray

from lenstrt.serve.pipeline import ServeOptions, serve
from lenstrt.serve.ray import serve_ray


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--backend", default="ort")
    ap.add_argument("--unit-rows", type=int, default=1024)
    a = ap.parse_args()
    opts = ServeOptions(backend=a.backend, unit_rows=a.unit_rows)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        s = serve(a.bundle, [a.data], out, opts, progress=False, log=lambda *x: None)
        rows.append(("plain serve", s["throughput"]["end_to_end_img_s"], s["throughput"]["wall_s"]))
    t = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t
    for w in (1, 2):
        with tempfile.TemporaryDirectory() as out:
            s = serve_ray(a.bundle, [a.data], out, opts, address=None, workers=w, progress=False, log=lambda *x: None)
            rows.append((f"ray, {w} worker(s)", s["throughput"]["end_to_end_img_s"], s["throughput"]["wall_s"]))
    ray.shutdown()
    print(f"ray.init: {init_s:.1f} s")
    base = rows[0][1]
    for name, ips, wall in rows:
        print(f"{name:<20} {ips:8.1f} img/s  {ips / base:5.2f}x plain  (wall {wall:.1f} s)")


if __name__ == "__main__":
    main()
