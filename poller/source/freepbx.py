"""The FreePBX `asteriskcdrdb.cdr` table as SQLAlchemy metadata (the demo and tests build it)."""

from __future__ import annotations

import sqlalchemy as sa

TEXT_COLUMNS = (
    ("clid", 80), ("src", 80), ("dst", 80), ("dcontext", 80), ("channel", 80),
    ("dstchannel", 80), ("lastapp", 80), ("lastdata", 80),
)


def freepbx_cdr(metadata: sa.MetaData, name: str = "cdr") -> sa.Table:
    """The stock FreePBX table: no primary key, indexes on calldate, dst, accountcode, uniqueid."""
    table = sa.Table(
        name, metadata,
        sa.Column("calldate", sa.DateTime, nullable=False, index=True),
        *[sa.Column(col, sa.String(size), nullable=False, server_default="")
          for col, size in TEXT_COLUMNS],
        sa.Column("duration", sa.Integer, nullable=False, server_default="0"),
        sa.Column("billsec", sa.Integer, nullable=False, server_default="0"),
        sa.Column("disposition", sa.String(45), nullable=False, server_default=""),
        sa.Column("amaflags", sa.Integer, nullable=False, server_default="0"),
        sa.Column("accountcode", sa.String(20), nullable=False, server_default="", index=True),
        sa.Column("uniqueid", sa.String(32), nullable=False, server_default="", index=True),
        sa.Column("userfield", sa.String(255), nullable=False, server_default=""),
        sa.Column("did", sa.String(50), nullable=False, server_default=""),
        sa.Column("recordingfile", sa.String(255), nullable=False, server_default=""),
        sa.Column("cnum", sa.String(80), nullable=False, server_default=""),
        sa.Column("cnam", sa.String(80), nullable=False, server_default=""),
        sa.Column("outbound_cnum", sa.String(80), nullable=False, server_default=""),
        sa.Column("outbound_cnam", sa.String(80), nullable=False, server_default=""),
        sa.Column("dst_cnam", sa.String(80), nullable=False, server_default=""),
        sa.Column("linkedid", sa.String(32), nullable=False, server_default=""),
        sa.Column("peeraccount", sa.String(80), nullable=False, server_default=""),
        sa.Column("sequence", sa.Integer, nullable=False, server_default="0"),
    )
    sa.Index(f"{name}_dst", table.c.dst)
    return table
