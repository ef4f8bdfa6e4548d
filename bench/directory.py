"""Directory costs for 100,000 callers: load time and peak memory from CSV and from
MariaDB, the per-run cost of the copy in state.dir, and of a `:numbers` lookup.

    python bench/directory.py [--rows 100000] [--mysql mysql+pymysql://root@127.0.0.1:3306]

Each case runs in a child process of its own, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from poller.callers.directory import lookup
from poller.callers.readers import read_csv, read_query
from poller.config.schema import CallersConfig, Seconds, Secret

FORMS = ("8{a}{b}", "+7{a}{b}", "7{a}{b}", "8 ({a}) {b}", "+7 {a} {b}")
NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


def numbers(count: int) -> list[tuple[str, str]]:
    """(as written, E.164) pairs of distinct Russian mobile numbers in mixed forms."""
    rng = random.Random(1)
    seen: set[str] = set()
    pairs = []
    while len(pairs) < count:
        a, b = f"9{rng.randint(10, 99)}", f"{rng.randint(0, 9_999_999):07d}"
        if a + b in seen:
            continue
        seen.add(a + b)
        pairs.append((rng.choice(FORMS).format(a=a, b=b), f"+7{a}{b}"))
    return pairs


def make_csv(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("number,name,id,inn\n")
        for n, (written, _) in enumerate(numbers(rows)):
            handle.write(f"{written},ООО «Клиент {n}»,{n},77{n:08d}\n")


def make_crm(server: str, rows: int) -> str:
    name = f"poller_bench_crm_{secrets.token_hex(4)}"
    admin = sa.create_engine(server, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = f"{server.rstrip('/')}/{name}"
    engine = sa.create_engine(url + "?charset=utf8mb4", poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE contacts (id INT PRIMARY KEY, phone VARCHAR(40), "
            "phone_e164 VARCHAR(20), company VARCHAR(200), inn VARCHAR(12), "
            "KEY (phone_e164))"))
        batch = []
        for n, (written, e164) in enumerate(numbers(rows)):
            batch.append({"id": n, "p": written, "e": e164, "c": f"ООО «Клиент {n}»",
                          "i": f"77{n:08d}"})
            if len(batch) == 5000:
                conn.execute(sa.text("INSERT INTO contacts VALUES (:id, :p, :e, :c, :i)"), batch)
                batch = []
        if batch:
            conn.execute(sa.text("INSERT INTO contacts VALUES (:id, :p, :e, :c, :i)"), batch)
    engine.dispose()
    return url


def drop_crm(server: str, url: str) -> None:
    admin = sa.create_engine(server, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{url.rsplit('/', 1)[1]}`"))


def measure(case: str, work: dict[str, str]) -> dict[str, float]:
    """Run one case in this process: its time and the process's peak RSS (no tracemalloc: it
    slows allocation-heavy code several times over)."""
    values = json.loads(work["config"])
    config = CallersConfig(**values | {"url": Secret(values.get("url", "")),
                                       "refresh": Seconds(values["refresh"]),
                                       "fields": tuple(values["fields"])})
    state = work["state"]
    run_numbers = json.loads(work["numbers"])
    started = time.perf_counter()
    if case == "csv":
        count = len(read_csv(config.csv, config.country, config.fields).callers)
    elif case == "query":
        count = len(read_query(config).callers)
    elif case in ("first_run", "cached_run", "refresh_run", "per_run"):
        minutes = {"cached_run": 1, "refresh_run": 11}.get(case, 0)
        count = len(lookup(config, state, run_numbers,
                           NOW + dt.timedelta(minutes=minutes)).matches)
    else:
        raise SystemExit(f"unknown case {case}")
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"count": count, "seconds": seconds, "rss_mb": rss}


def child(case: str, work: dict[str, str]) -> dict[str, float]:
    # the baseline: the same imports with no work, so RSS differences are the case's own
    out = subprocess.run([sys.executable, __file__, "--child", case, json.dumps(work)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def config_json(**values: object) -> str:
    return json.dumps({"country": "RU", "fields": ["inn"], "refresh": 600.0, **values})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--mysql", default="mysql+pymysql://root@127.0.0.1:3306")
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], json.loads(args.child[1]))))
        return
    sample = [e164 for _, e164 in numbers(args.rows)[:: max(1, args.rows // 100)]][:100]
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "callers.csv"
        make_csv(csv_path, args.rows)
        url = make_crm(args.mysql, args.rows)
        try:
            query = "SELECT phone AS number, company AS name, id, inn FROM contacts"
            cases = [
                ("CSV read + normalise", "csv", config_json(csv=str(csv_path)), "a"),
                ("MariaDB read + normalise", "query", config_json(url=url, query=query), "b"),
                ("first run (CSV read, copy written)", "first_run",
                 config_json(csv=str(csv_path)), "c"),
                ("later run (copy read, 100 numbers)", "cached_run",
                 config_json(csv=str(csv_path)), "c"),
                ("refresh run (copy + CSV re-read)", "refresh_run",
                 config_json(csv=str(csv_path)), "c"),
                (":numbers, 100 numbers, indexed", "per_run", config_json(
                    url=url, query=query + " WHERE phone_e164 IN :numbers"), "d"),
                (":numbers, 100 numbers, no index", "per_run", config_json(
                    url=url, query=query + " IGNORE INDEX (phone_e164) WHERE phone_e164 IN "
                    ":numbers"), "e"),
            ]
            base = child("per_run", {"config": config_json(), "state": folder,
                                     "numbers": "[]"})
            print(f"{args.rows} callers; idle child process RSS {base['rss_mb']:.0f} MB")
            print(f"{'case':40} {'found':>7} {'seconds':>8} {'peak RSS MB':>12}")
            for title, case, config, state in cases:
                work = {"config": config, "state": str(Path(folder) / state),
                        "numbers": json.dumps(sample)}
                result = child(case, work)
                print(f"{title:40} {result['count']:7.0f} {result['seconds']:8.3f} "
                      f"{result['rss_mb']:12.0f}")
            copy = Path(folder) / "c" / "callers.json"
            print(f"copy in state.dir: {copy.stat().st_size / 2**20:.1f} MB")
        finally:
            drop_crm(args.mysql, url)


if __name__ == "__main__":
    main()
