"""Back up or restore the gateway's SQLite database, run in a one-off container of the
gateway image (the Job analog of the docker target; the image has Python, not sqlite3).

    sqlite_backup.py backup LIVE COPY    # online copy, consistent under concurrent writes
    sqlite_backup.py restore COPY LIVE   # replaces every page of LIVE (instances stopped)

Prints the integrity check and the row count of every table of the written file as JSON.
"""

import json
import os
import sqlite3
import sys
from contextlib import closing


def copy(source: str, destination: str) -> None:
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(destination)) as dst:
        src.backup(dst)


def describe(path: str) -> dict:
    with closing(sqlite3.connect(path)) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        user_tables = (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        names = [row[0] for row in db.execute(user_tables)]
        tables = {name: str(db.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]) for name in names}
    return {"integrity": integrity, "tables": tables}


def main() -> None:
    os.umask(0o077)  # backups and a restored database are readable by the gateway user only
    action, source, destination = sys.argv[1:4]
    if action not in ("backup", "restore"):
        sys.exit(f"unknown action {action!r}: backup or restore")
    copy(source, destination)
    print(json.dumps(describe(destination)))


if __name__ == "__main__":
    main()
