"""One entry point for every trainer:

    python -m svcodec.train MODEL --ckpt PATH --minutes M [--device cpu|cuda] [--data DIR]
                                  [--init WEIGHTS] [--stage S] [model flags]
    torchrun --nproc-per-node N -m svcodec.train MODEL ...      (DistributedDataParallel)

MODEL names a trainer module below; the remaining arguments go to its main(argv).
`python -m svcodec.train MODEL --help` lists a model's flags.
"""

from __future__ import annotations

import importlib
import sys

from ..allocator import tune_malloc

TRAINERS = {
    "intra": "svcodec.train.train_intra",
    "inter": "svcodec.train.train_inter",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nmodels: " + ", ".join(TRAINERS))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in TRAINERS:
        print(f"error: unknown model {name!r}; choose one of: {', '.join(TRAINERS)}", file=sys.stderr)
        return 2
    modname = TRAINERS[name]
    tune_malloc()
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name == modname:  # the trainer itself is missing, not one of its imports
            print(f"error: model {name!r}: its trainer {modname} is not in this checkout yet", file=sys.stderr)
            return 2
        print(f"error: model {name!r} needs the Python package {e.name!r}, which is not installed "
              f"(install it, or on the GPU machine carry its wheel: see weights/README.md)", file=sys.stderr)
        return 2
    if not hasattr(module, "main"):
        print(f"error: model {name!r}: {modname} has no main(argv)", file=sys.stderr)
        return 2
    module.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
