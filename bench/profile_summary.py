"""Summarise a py-spy raw profile (collapsed stacks): the functions where samples were taken
(self) and the project and library frames that contain them (inclusive).

    uv run python bench/profile_summary.py /tmp/consent-bench-logs-*/service-1w-*.profile.txt
"""

from __future__ import annotations

import collections
import sys


def main(paths: list[str]) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        with open(path) as profile:
            for line in profile:
                stack, _, count = line.rstrip().rpartition(" ")
                if not count.isdigit():  # py-spy ends some files with a blank line
                    continue
                samples = int(count)
                frames = stack.split(";")
                total += samples
                own[frames[-1]] += samples
                for frame in set(frames):
                    inclusive[frame] += samples
    print(f"{total} samples")
    print("\nself:")
    for frame, samples in own.most_common(20):
        print(f"  {samples * 100 / total:5.1f}%  {frame[:140]}")
    print("\ninclusive (project and libraries):")
    shown = 0
    for frame, samples in inclusive.most_common():
        if "threading.py" not in frame and "runners.py" not in frame and "<module>" not in frame:
            print(f"  {samples * 100 / total:5.1f}%  {frame[:140]}")
            shown += 1
            if shown == 45:
                break


if __name__ == "__main__":
    main(sys.argv[1:])
