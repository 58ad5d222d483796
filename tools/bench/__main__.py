"""``python -m tools.bench models [--size 384] [--width 1.0] [--repeats 10] [--threads N] [--out-dir results]``."""

import sys

import fire


def models(size: int = 384, width: float = 1.0, repeats: int = 10, threads: int | None = None, out_dir: str = "results",
           networks: str | None = None) -> None:
    """Parameters, GMACs and CPU latency per slice of the five networks; writes ``models.md`` and ``models.csv``."""
    from .models import benchmark_models, write_models_table

    names = [n.strip() for n in networks.split(",")] if isinstance(networks, str) else networks
    figures = benchmark_models(names, size=size, width=width, repeats=repeats, threads=threads)
    md_path, csv_path = write_models_table(figures, out_dir, command="python -m tools.bench " + " ".join(sys.argv[1:]))
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")


if __name__ == "__main__":
    fire.Fire({"models": models})
