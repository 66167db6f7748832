"""nnU-Net's own dataset check on a bundle built from real sources (too heavy for CI: nnunetv2 needs PyTorch).

1. Runs the end-to-end browser test (tests/test_browser_real_sources.py): the catalog's IDC- and Zenodo-resolved
   datasets, served by loopback stand-ins, built into one bundle with DICOM SEG and RTSTRUCT labels; the test
   keeps the unpacked bundle in IMAGINGX_E2E_BUNDLE_DIR.
2. Installs nnunetv2 into its own virtualenv (`bench/.data/nnunet-venv`, CPU PyTorch; made once, reused) and runs
   `nnunetv2.experiment_planning.verify_dataset_integrity.verify_dataset_integrity` on every
   `nnunet/Dataset*` folder of the bundle. That function raises on any broken rule (dataset.json keys, label
   values and consecutiveness, image/label geometry, file endings, case counts).

    python -m bench.nnunet_check.run            # needs the test environment (README) and Chromium
    python -m bench.nnunet_check.run --bundle DIR   # check an unpacked bundle you already have

Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "bench" / ".data" / "nnunet-venv"
# PyTorch's CPU build of this version is what the project's machines install without a GPU toolchain
REQUIREMENTS = ("torch==2.13.0", "nnunetv2==2.8.1")
CHECK = """
import sys
from importlib.metadata import version
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
for folder in sys.argv[1:]:
    verify_dataset_integrity(folder, num_processes=1)
    print(f"nnunetv2 {version('nnunetv2')}: verify_dataset_integrity passed on {folder}")
"""


def nnunet_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        for requirement in REQUIREMENTS:  # torch first, so nnunetv2 does not pull another build of it
            subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True)
    return python


def build_bundle(into: Path) -> Path:
    env = dict(os.environ, IMAGINGX_E2E_BUNDLE_DIR=str(into))
    test = ROOT / "tests" / "test_browser_real_sources.py"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)], check=True, env=env
    )
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bundle", type=Path, help="an unpacked bundle (default: build one with the e2e test)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nnunet-check-") as scratch:
        bundle = args.bundle or build_bundle(Path(scratch) / "bundle")
        datasets = sorted(str(p) for p in (bundle / "nnunet").glob("Dataset*") if p.is_dir())
        if not datasets:
            print(f"error: no nnunet/Dataset* folder in {bundle}", file=sys.stderr)
            return 1
        env = dict(
            os.environ, nnUNet_raw=str(bundle / "nnunet"), nnUNet_preprocessed=scratch, nnUNet_results=scratch
        )
        return subprocess.run([str(nnunet_python()), "-c", CHECK, *datasets], env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
