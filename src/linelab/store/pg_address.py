"""Where a PostgreSQL workspace is: its URL (database, schema of the line) and its local folder.

`postgresql://[user[:password]@]host[:port]/database[?schema=NAME&files=DIR]`: `schema`
(default `linelab`) holds one line's tables, so one database serves several lines; `files` is
the local folder for what a workspace keeps as files (profile, monitor state, plots), by
default under the user's data folder. The folder records the URL in `DATABASE_FILE`, so
opening the folder opens the same database. Prefer PGPASSWORD or ~/.pgpass to a password in
the URL: the URL is written to that file (readable by its owner only).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from linelab.errors import UserError

SCHEMES = ("postgresql://", "postgres://")
DATABASE_FILE = "database.url"  # in a PostgreSQL workspace's local folder: the URL it opens
DEFAULT_SCHEMA = "linelab"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def is_database_url(location: str | Path | None) -> bool:
    return location is not None and str(location).startswith(SCHEMES + ("postgresql:/", "postgres:/"))


@dataclass(frozen=True)
class DatabaseURL:
    """A PostgreSQL workspace's address: the libpq URI, the schema of the line, its local folder."""

    uri: str
    schema: str
    files: Path

    @classmethod
    def parse(cls, text: str | Path) -> DatabaseURL:
        # A URL that went through pathlib lost one slash of "//": put it back.
        raw = re.sub(r"^(postgres(?:ql)?):/+", r"\1://", str(text))
        parts = urlsplit(raw)
        query = dict(parse_qsl(parts.query))
        schema = query.pop("schema", DEFAULT_SCHEMA)
        if not _SCHEMA_NAME.fullmatch(schema):
            raise UserError(f"workspace {cls.redact(raw)}: schema {schema!r} must be lower-case letters, digits "
                            "and _ (at most 63)")
        if not parts.path.strip("/"):
            raise UserError(f"workspace {cls.redact(raw)}: name the database (postgresql://host:5432/DATABASE)")
        files = query.pop("files", None)
        query.setdefault("application_name", f"linelab {schema}")  # who is connected, as the server shows it
        uri = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, quote_via=quote), ""))
        if files:
            folder = Path(files).expanduser()
        else:
            slug = "-".join(str(p) for p in (parts.hostname or "local", parts.port or 5432, parts.path.strip("/"),
                                             schema))
            data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
            folder = data_home / "linelab" / "postgresql" / re.sub(r"[^A-Za-z0-9_.-]", "_", slug)
        return cls(uri, schema, folder)

    @staticmethod
    def redact(uri: str) -> str:
        return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", uri)

    def __str__(self) -> str:
        parts = urlsplit(self.uri)
        return f"{self.redact(urlunsplit((parts.scheme, parts.netloc, parts.path, '', '')))} (schema {self.schema})"

    def link_folder(self, original: str | Path) -> Path:
        """Create the local folder and record in it which database it opens."""
        self.files.mkdir(parents=True, exist_ok=True)
        pointer = self.files / DATABASE_FILE
        text = re.sub(r"^(postgres(?:ql)?):/+", r"\1://", str(original))
        if not pointer.exists() or pointer.read_text().strip() != text:
            pointer.write_text(text + "\n")
            pointer.chmod(0o600)  # it may hold a password
        return self.files


def linked_url(folder: Path) -> str | None:
    """The database a local folder opens, if it is a PostgreSQL workspace's folder."""
    pointer = folder / DATABASE_FILE
    return pointer.read_text().strip() if pointer.exists() else None
