"""Static bearer tokens from a CSV file, as kube-apiserver's `--token-file`:
`token,user,uid,"group1,group2"` per line (the groups column is optional). For admins and
test fixtures; the tokens never expire, so the file is the only way to revoke one."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from pathlib import Path

from vwproxy.auth.identity import User


def _digest(token: str) -> bytes:
    # Looked up by digest so the table holds no token in the clear and lookups compare fixed-size keys.
    return hashlib.sha256(token.encode()).digest()


class StaticTokens:
    """A token -> user table."""

    def __init__(self, users: Mapping[str, User]) -> None:
        self._users = {_digest(token): user for token, user in users.items()}

    @classmethod
    def parse(cls, text: str, where: str = "token file") -> StaticTokens:
        """Read the CSV; a line with fewer than three columns or a repeated token is an error."""
        users: dict[str, User] = {}
        for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 3:
                raise ValueError(f"{where}, line {number}: expected token,user,uid[,\"groups\"]")
            token, name, uid = (cell.strip() for cell in row[:3])
            if not token or not name:
                raise ValueError(f"{where}, line {number}: the token and the user name may not be empty")
            if token in users:
                raise ValueError(f"{where}, line {number}: the token repeats an earlier line")
            groups = tuple(group.strip() for group in row[3].split(",") if group.strip()) if len(row) > 3 else ()
            users[token] = User(name=name, groups=groups, uid=uid)
        return cls(users)

    @classmethod
    def load(cls, path: Path) -> StaticTokens:
        return cls.parse(path.read_text(), where=str(path))

    def lookup(self, token: str) -> User | None:
        return self._users.get(_digest(token))

    def __len__(self) -> int:
        return len(self._users)
