"""The data one step earlier: every user's last item withheld, written as a sequence file.

On the real data the validation question asks for the item right after the training sequences, from exactly
those sequences; the test question asks one step later, from a history whose last item no model trained on.
On this file the test question is the real validation item asked the way the real test is asked: from a
history whose last item the model never trained on. A recipe's test figure here is a validation figure that
drifts as the real test does, and the real test items are dropped as the file is read, so nothing is chosen
on them.

    python benchmarks/one_step_earlier.py ../shared/data/Beauty.txt runs/earlier/Beauty_earlier.txt
    python benchmarks/seeds.py --data runs/earlier/Beauty_earlier.txt --recipe defaults --seeds 1 --test \
        --json benchmarks/results/seeds_Beauty_earlier.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recgpt_tf.data.readers import load_interactions, write_sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the real data file")
    parser.add_argument("out", type=Path, help="the sequence file to write (user item item ...)")
    args = parser.parse_args()
    earlier = {user: items[:-1] for user, items in load_interactions(args.data).items() if len(items) > 1}
    write_sequences(earlier, args.out)
    print(f"{args.out}: {len(earlier)} users, {sum(map(len, earlier.values()))} interactions")


if __name__ == "__main__":
    main()
