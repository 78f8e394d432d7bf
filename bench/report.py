"""Print the records/s of a pytest-benchmark JSON file as a table.

    python -m pytest bench --benchmark-only --benchmark-json=bench.json
    python bench/report.py bench.json
"""
import json
import sys


def main(path):
    with open(path) as f:
        data = json.load(f)
    print(f"{'benchmark':45} {'median rec/s':>14} {'best rec/s':>14} {'us/op':>8}")
    for b in data["benchmarks"]:
        ex = b.get("extra_info", {})
        n = ex.get("records", 1)
        print(f"{b['name']:45} {ex.get('records_per_s_median', 0):>14,} "
              f"{ex.get('records_per_s_best', 0):>14,} "
              f"{b['stats']['median'] / n * 1e6:>8.3f}")
        for k in ("us_per_get_median", "wake_us_median", "wake_us_p99"):
            if k in ex:
                print(f"    {k} = {ex[k]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
