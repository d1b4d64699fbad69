"""End-to-end serve throughput against the raw backend on the same batches in the same run.

pipeline_efficiency = end-to-end images/s (reader + inference + writer threads, models loaded) divided by
images/s of the ensemble calls alone. 1.0 means reading and writing are fully hidden behind inference.

    .venv/bin/python benchmarks/serve_efficiency.py --bundle B [--bundle B2] --data DIR [--backends ort,torch]
"""

import argparse
import tempfile

from lenstrt.serve.pipeline import ServeOptions, serve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", action="append", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--backends", default="ort,torch")
    ap.add_argument("--batch-size", type=int, default=128)
    a = ap.parse_args()
    print(f"{'bundle':<28} {'backend':<8} {'end-to-end img/s':>17} {'inference img/s':>16} {'ratio':>6}")
    for bundle in a.bundle:
        for backend in a.backends.split(","):
            with tempfile.TemporaryDirectory() as out:
                s = serve(bundle, [a.data], out, ServeOptions(backend=backend, batch_size=a.batch_size),
                          progress=False, log=lambda *x: None)
            tp = s["throughput"]
            print(f"{bundle[-28:]:<28} {backend:<8} {tp['end_to_end_img_s']:>17,.1f} {tp['inference_img_s']:>16,.1f} "
                  f"{tp['pipeline_efficiency']:>6.3f}")


if __name__ == "__main__":
    main()
