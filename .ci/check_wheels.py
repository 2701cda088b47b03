"""Check that each package's wheel lists only its own dependencies (the packages' install promise)."""

import sys
import zipfile
from pathlib import Path

# Distributions each wheel may require (base requirements; extras may add more).
ALLOWED = {
    "ea_core": {"torch", "safetensors"},
    "ea_vae": {"ea-core", "torch", "einops", "safetensors"},
    "ea_dit": {"ea-core", "torch", "einops", "safetensors", "transformers", "sentencepiece", "triton"},
    "ea_data": {"ea-core", "ea-vae", "torch", "webdataset", "braceexpand", "scenedetect", "opencv-python-headless", "av",
                "numpy", "tqdm", "pillow"},
    "ea_captions": {"ea-core", "ea-data", "ea-vae", "torch", "transformers", "torchvision", "pillow", "numpy", "tqdm"},
}
FORBIDDEN_ANYWHERE = {
    "ea_core": {"einops", "transformers", "triton", "ea-vae", "ea-dit", "ea-data", "ea-captions"},
    "ea_vae": {"transformers", "triton", "open-clip-torch", "ea-dit", "ea-data", "diffusers"},
    "ea_dit": {"ea-vae", "ea-data", "ea-captions"},
}


def requirements(wheel: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    out = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            spec = line.split(":", 1)[1].strip()
            name = spec.split(";")[0].split("[")[0]
            for ch in "<>=!~ (":
                name = name.split(ch)[0]
            out.append((name.strip().lower().replace("_", "-"), spec))
    return out


def main(dist: str) -> int:
    wheels = sorted(Path(dist).glob("*.whl"))
    names = {w.name.split("-")[0] for w in wheels}
    errors = []
    if names != set(ALLOWED):
        errors.append(f"expected wheels for {sorted(ALLOWED)}, found {sorted(names)}")
    for w in wheels:
        pkg = w.name.split("-")[0]
        if pkg not in ALLOWED:
            continue
        reqs = requirements(w)
        base = {n for n, spec in reqs if "extra ==" not in spec}
        extra_only = {n for n, spec in reqs if "extra ==" in spec}
        if base - ALLOWED[pkg]:
            errors.append(f"{w.name}: unexpected base dependencies {sorted(base - ALLOWED[pkg])}")
        bad = (base | extra_only) & FORBIDDEN_ANYWHERE.get(pkg, set())
        if bad:
            errors.append(f"{w.name}: must not depend on {sorted(bad)}")
        print(f"{w.name}: {sorted(base)} + extras {sorted(extra_only - base)}")
    for e in errors:
        print("ERROR:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
