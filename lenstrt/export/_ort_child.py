"""Child process for guarded ONNX Runtime runs: a converted graph that crashes ORT (it happens with
fp16 graphs) kills this process, not the export. Usage: python -m lenstrt.export._ort_child MODEL IN OUT LEVEL"""

import sys

import numpy as np


def main() -> None:
    model, src, dst, level = sys.argv[1:5]
    from lenstrt.runtime.ort import make_session, run_session

    sess = make_session(model, "cpu", level)
    x = np.load(src)
    outs = []
    for i in range(0, len(x), 256):
        outs.append(run_session(sess, x[i:i + 256]))
    np.savez(dst, *[np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))])


if __name__ == "__main__":
    main()
