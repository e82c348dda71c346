"""Build the bundled pool's warm start, ``banditroute/data/pool.example.state``.

The bundled pool (``banditroute/data/pool.example.toml``) holds eleven current models. Public outcomes
with every one of them answering every prompt exist for math, reasoning and code: the ZeroEval table
(GSM8K, MATH level 5, CRUXEval; 2,840 prompts x 28 models; ../shared/data/README.md). This script
takes those eleven models' columns, renames them to the pool's names, and fits the pool's default
policy on all of its prompts with full information (``pretrain``: every model's quality and cost
learned on every prompt), then writes the state. ``serve`` with the bundled pool starts from it.

    python scripts/build_warm_start.py [--table ../shared/data/zeroeval_gsm_math_crux.parquet]

Deterministic: the same table and code write the same file. Rerun it when the features or the default
policy change (the service refuses a state learned with other features, with the reason).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from banditroute.config import load_settings
from banditroute.core.state import save_state
from banditroute.offline.outcomes import Outcomes, load_outcomes
from banditroute.offline.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT.parent / "shared" / "data" / "zeroeval_gsm_math_crux.parquet"
OUT = ROOT / "banditroute" / "data" / "pool.example.state"
# the table's model names -> the bundled pool's
NAMES = {
    "o1-mini-2024-09-12": "o1-mini-2024-09-12",
    "gpt-4o-2024-08-06": "gpt-4o-2024-08-06",
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini-2024-07-18",
    "claude-3-5-sonnet-20241022": "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku-20241022": "claude-3-5-haiku-20241022",
    "gemini-1.5-pro": "gemini-1.5-pro",
    "gemini-1.5-flash": "gemini-1.5-flash",
    "Mistral-Large-2": "mistral-large-2",
    "Llama-3.1-405B-Inst@sambanova": "llama-3.1-405b-instruct",
    "Meta-Llama-3.1-70B-Instruct": "llama-3.1-70b-instruct",
    "deepseek-v2.5-0908": "deepseek-v2.5",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    pool = load_settings()
    table = load_outcomes(args.table)
    by_pool_name = {NAMES[m]: k for k, m in enumerate(table.models) if m in NAMES}
    missing = [m for m in pool.names if m not in by_pool_name]
    if missing:
        raise SystemExit(f"the table has no outcomes for {', '.join(missing)}")
    cols = [by_pool_name[m] for m in pool.names]
    every = Outcomes(table.prompt_ids, table.prompts, table.tasks, np.full(len(table), "train"), list(pool.names),
                     table.quality[:, cols], table.cost[:, cols])
    print(f"pretraining {pool.policy.name} on {len(every)} prompts x {len(pool.names)} models", file=sys.stderr)
    policy = pretrain(every, pool.policy.name, pool=pool, settings=pool.policy)
    save_state(policy, args.out, source=f"{args.table.name}, every split, full information")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
